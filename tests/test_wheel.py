"""A wheel install (not the editable one) carries the app's stylesheet and the shipped model."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

MODEL = ROOT / "models" / "anna.safetensors"


@pytest.mark.slow
@pytest.mark.skipif(not MODEL.exists(), reason="no shipped model in models/")
def test_wheel_carries_the_model_and_the_stylesheet(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path, ROOT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if built.returncode != 0 and "No module named setuptools" in built.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("charterm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "charterm/app/charterm.tcss" in names
    assert any(n.endswith("data/share/charterm/models/anna.safetensors") for n in names)

    # a fresh environment: the wheel installed into its own prefix, the dependencies borrowed from ours
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True, timeout=120)
    pure = Path(sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})["purelib"])
    (pure / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed"]
        + ["--prefix", env, wheel],  # --ignore-installed: leave this environment's charterm installed
        check=True,
        capture_output=True,
        timeout=300,
    )
    ours = subprocess.run([sys.executable, "-m", "pip", "show", "-q", "charterm"], capture_output=True, timeout=120)
    assert ours.returncode == 0, "installing the wheel elsewhere uninstalled this environment's charterm"
    code = (
        "import charterm, charterm.paths as c; from pathlib import Path;"
        "print(charterm.__file__); print(c.default_model_path());"
        "print((Path(charterm.__file__).parent / 'app' / 'charterm.tcss').exists())"
    )
    out = subprocess.run(
        [env / "bin" / "python", "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    package, model, tcss = out.stdout.split("\n")[:3]
    assert package.startswith(str(env)) and not package.startswith(str(ROOT))
    assert model == str(env / "share" / "charterm" / "models" / "anna.safetensors")
    assert Path(model).read_bytes() == MODEL.read_bytes()
    assert tcss == "True"
    info = subprocess.run(
        [env / "bin" / "python", "-m", "charterm", "info", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the repo: `-m` would import the package from the working directory
    )
    assert info.returncode == 0 and '"hidden"' in info.stdout, info.stderr
