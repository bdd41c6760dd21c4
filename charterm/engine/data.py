"""Downloading training texts: streamed, sha256-verified, written atomically."""

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from charterm.engine.text import sha256_file
from charterm.errors import CharTermError, UsageError
from charterm.files import atomic_path


@dataclass(frozen=True)
class Dataset:
    name: str
    url: str
    sha256: str
    filename: str


DATASETS = {
    "anna": Dataset(
        "anna",
        "https://raw.githubusercontent.com/udacity/deep-learning-v2-pytorch/master/"
        "recurrent-neural-networks/char-rnn/data/anna.txt",
        "568bb39fc78aca98e9db91c4329dcd1aa5ec4c3df3aca2064ce5d6f023ae16c9",
        "anna.txt",
    ),
}


def fetch(
    url: str, dest: str | os.PathLike, sha256: str, on_progress=lambda done, total: None, timeout: float = 30.0
) -> bool:
    """Download url to dest if it is not already there with the right checksum.
    Returns False when dest was already present and verified. dest is never left half-written."""
    dest = Path(dest)
    if dest.is_dir():
        raise UsageError(f"{dest} is a directory; pass --dest FILE")
    if dest.exists() and sha256_file(dest) == sha256:
        return False
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CharTermError(f"cannot create {dest.parent}: {e.strerror or e}") from None
    h = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f:
                while block := resp.read(1 << 16):
                    f.write(block)
                    h.update(block)
                    done += len(block)
                    on_progress(done, total)
            if total is not None and done < total:
                raise CharTermError(f"download interrupted after {done:,} of {total:,} bytes; run the command again")
            if h.hexdigest() != sha256:
                raise CharTermError(
                    f"checksum mismatch for {url}: got sha256 {h.hexdigest()[:16]}..., expected {sha256[:16]}...; "
                    f"nothing was written"
                )
    except urllib.error.HTTPError as e:
        raise CharTermError(f"download failed: HTTP {e.code} from {url}") from None
    except ValueError as e:
        raise UsageError(f"bad --url {url!r}: {e}") from None
    except http.client.IncompleteRead:
        raise CharTermError(f"download interrupted after {done:,} bytes; run the command again") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CharTermError(
            f"download failed after {done:,} bytes ({reason}); check the network and run again"
        ) from None
    return True
