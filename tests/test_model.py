import torch
from torch import nn

from charterm.config import ModelConfig
from charterm.engine.model import CharModel, cheap_dropout
from charterm.engine.sampling import CharSampler, Generation, Stepper, run_ids


def make(cell="lstm", hidden=32, layers=2, vocab=11, seed=0):
    torch.manual_seed(seed)
    m = CharModel(ModelConfig(vocab_size=vocab, cell=cell, hidden=hidden, layers=layers))
    m.eval()
    return m


def test_embedding_equals_the_notebooks_one_hot_lstm():
    """An embedding as wide as the vocabulary is the notebook's one-hot input, as a lookup."""
    V, H = 13, 24
    torch.manual_seed(1)
    notebook = nn.LSTM(V, H, 2, batch_first=True)
    fc = nn.Linear(H, V)
    model = CharModel(ModelConfig(vocab_size=V, hidden=H, layers=2)).eval()
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(V))
        for i, rnn in enumerate(model.rnns):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(rnn, f"{name}_l0").copy_(getattr(notebook, f"{name}_l{i}"))
        model.fc.load_state_dict(fc.state_dict())
    ids = torch.randint(0, V, (3, 17))
    one_hot = torch.nn.functional.one_hot(ids, V).float()
    with torch.no_grad():
        out_nb, (h_nb, c_nb) = notebook(one_hot)
        logits_nb = fc(out_nb)
        logits, (h, c) = model(ids)
    assert torch.allclose(logits, logits_nb, atol=1e-5)
    assert torch.allclose(h, h_nb, atol=1e-5) and torch.allclose(c, c_nb, atol=1e-5)


def test_cheap_dropout_drops_the_right_share_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = cheap_dropout(x, 0.5)
    dropped = (y == 0).float().mean().item()
    assert 0.49 < dropped < 0.51
    assert abs(y.mean().item() - 1.0) < 0.02
    assert torch.equal(cheap_dropout(x, 0.0), x)
    assert 0.09 < (cheap_dropout(x, 0.1) == 0).float().mean().item() < 0.11


def test_dropout_only_in_training():
    m = make()
    m.config.dropout = 0.5
    ids = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        a, _ = m(ids)
        b, _ = m(ids)
        assert torch.equal(a, b)
        m.train()
        c, _ = m(ids)
    assert not torch.equal(a, c)


def test_weight_drop_drops_recurrent_connections_in_training_only():
    for cell in ("lstm", "gru"):
        m = make(cell)
        ids = torch.randint(0, 11, (3, 12))
        with torch.no_grad():
            plain, plain_state = m(ids)
            m.train()
            same, same_state = m(ids)  # no dropout of any kind configured: the weight-drop path is unused
            m.config.weight_drop = 1e-9  # rounds to a mask that keeps everything: the same numbers as nn.LSTM/GRU
            kept, kept_state = m(ids)
            m.config.weight_drop = 0.5
            dropped, dropped_state = m(ids)
            m.eval()
            after, _ = m(ids)
        assert torch.equal(plain, same) and torch.equal(plain, after)
        assert torch.allclose(plain, kept, atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain_state, kept_state, strict=True))
        assert [s.shape for s in dropped_state] == [s.shape for s in plain_state]
        # the first char's output has no recurrent input yet, so only the later ones differ
        assert torch.allclose(dropped[:, 0], plain[:, 0], atol=1e-5)
        assert not torch.allclose(dropped[:, 1:], plain[:, 1:], atol=1e-3)
        m.train()
        m(ids)[0].sum().backward()
        w = m.rnns[0].weight_hh_l0
        zero_grad_share = (w.grad == 0).float().mean().item()
        assert 0.3 < zero_grad_share < 0.7, (cell, zero_grad_share)  # the dropped connections get no gradient
        assert w.grad is not None and isinstance(w, nn.Parameter)


def test_state_carries_across_windows():
    m = make()
    ids = torch.randint(0, 11, (2, 40))
    with torch.no_grad():
        whole, s_whole = m(ids)
        first, s = m(ids[:, :25])
        second, s2 = m(ids[:, 25:], s)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(s2, s_whole, strict=True))


def _step_all(stepper, ids, batch=1):
    layers = stepper.from_state(make_state(stepper, batch))
    return torch.stack([stepper.step(ids[:, t], layers) for t in range(ids.shape[1])], 1), stepper.to_state(layers)


def make_state(stepper, batch):
    c = stepper.config
    n = 2 if c.cell == "lstm" else 1
    return tuple(torch.zeros(c.layers, batch, c.hidden) for _ in range(n))


def test_stepper_fp32_matches_the_model_for_lstm_and_gru():
    for cell in ("lstm", "gru"):
        for layers in (1, 3):
            m = make(cell, layers=layers)
            ids = torch.randint(0, 11, (3, 20))
            with torch.no_grad():
                ref, ref_state = m(ids)
            got, state = _step_all(Stepper(m, "fp32"), ids, batch=3)
            assert torch.allclose(got, ref, atol=1e-4), (cell, layers)
            assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(state, ref_state, strict=True))


def test_stepper_int8_is_close_to_fp32():
    m = make(hidden=64)
    ids = torch.randint(0, 11, (1, 50))
    with torch.no_grad():
        ref, _ = m(ids)
    got, _ = _step_all(Stepper(m, "int8"), ids)
    p_ref, p_got = ref.softmax(-1), got.softmax(-1)
    assert (p_ref - p_got).abs().max() < 0.02


def test_feed_then_generate_is_seeded_and_continues_the_state():
    m = make()
    stepper = Stepper(m, "fp32")
    logits, state = run_ids(m, [1, 2, 3])

    def draw(seed, n=30):
        gen = Generation(stepper, logits, state, CharSampler(top_k=3, temperature=1.0, seed=seed))
        out = []
        for i in gen:
            out.append(i)
            if len(out) == n:
                break
        return out, gen

    a, gen = draw(5)
    b, _ = draw(5)
    c, _ = draw(6)
    assert a == b and a != c
    # the state after stopping equals feeding the prime and the generated chars as one sequence
    _, fed_state = run_ids(m, [1, 2, 3] + a)
    assert all(torch.allclose(x, y, atol=1e-4) for x, y in zip(gen.state, fed_state, strict=True))


def test_sampler_top_k_and_greedy():
    logits = torch.tensor([0.0, 5.0, 4.9, -3.0, 1.0])
    greedy = CharSampler(top_k=None, temperature=0)
    assert all(greedy(logits) == 1 for _ in range(10))
    top2 = CharSampler(top_k=2, temperature=1.0, seed=0)
    seen = {top2(logits) for _ in range(300)}
    assert seen == {1, 2}
    hot = CharSampler(top_k=None, temperature=100.0, seed=0)
    assert len({hot(logits) for _ in range(500)}) == 5


def test_int8_is_the_default_where_the_platform_has_it():
    import platform

    stepper = Stepper(make())
    if platform.machine() in ("x86_64", "AMD64"):
        assert stepper.precision == "int8"
    assert Stepper(make(), "fp32").precision == "fp32"


def test_loading_and_sampling_do_not_import_torch_dynamo(tmp_path):
    """torch._dynamo costs 2 s to import; nn.Embedding's init or a torch.device context would
    pull it in at every `charterm generate`, `info` and app start."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from charterm.engine.checkpoint import load_model, save_model\n"
        "from charterm.config import ModelConfig\n"
        "from charterm.engine.model import CharModel\n"
        "from charterm.engine.text import Vocabulary\n"
        "from charterm.engine.sampling import CharSampler, Generation, Stepper, run_ids\n"
        f"p = {str(tmp_path / 'm.safetensors')!r}\n"
        "save_model(p, CharModel(ModelConfig(vocab_size=3, hidden=8)), Vocabulary('ab '), {})\n"
        "m = load_model(p)\n"
        "logits, state = run_ids(m.model, [0, 1])\n"
        "g = iter(Generation(Stepper(m.model), logits, state, CharSampler(seed=1)))\n"
        "[next(g) for _ in range(5)]\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_the_embedding_starts_as_nn_embedding_would():
    """CharModel draws its embedding with torch.randn (no torch._dynamo); the numbers must be
    nn.Embedding's own N(0, 1) init for the same seed, so seeded runs train as before."""
    torch.manual_seed(3)
    expected = nn.Embedding(83, 83).weight.detach().clone()
    torch.manual_seed(3)
    model = CharModel(ModelConfig(vocab_size=83))
    assert torch.equal(model.embed.weight, expected) and model.embed.weight.requires_grad
