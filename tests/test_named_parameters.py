"""Named parameters: ``RMSprop(model.named_parameters())`` and ``param_names``, as torch 2.x has them.

Each behaviour is asserted against torch 2.13 doing the same thing, where
torch is installed: where ``param_names`` sits in a group and in a
state_dict, when it is there, and what ``load_state_dict`` does with it.
"""

from __future__ import annotations

import numpy as np
import pytest

import lucid
from lucid import serialization
from lucid.nn import Module, Parameter
from lucid.optim import RMSprop

torch = pytest.importorskip("torch")


class _Net(Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = Parameter(np.arange(6, dtype=np.float32).reshape(2, 3) / 7)
        self.bias = Parameter(np.array([0.5, -0.25], dtype=np.float32))


def _step(params: list[Parameter], opt: RMSprop) -> None:
    for i, p in enumerate(params):
        p.grad = np.full_like(p.data, 0.1 * (i + 1))
    opt.step()


def _torch_twin(net: _Net) -> tuple[list[torch.nn.Parameter], list[tuple[str, torch.nn.Parameter]]]:
    params = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in net.parameters()]
    return params, [(name, p) for (name, _), p in zip(net.named_parameters(), params)]


def test_named_parameters_give_param_names_beside_params() -> None:
    net = _Net()
    opt = RMSprop(net.named_parameters(), lr=0.1)  # a generator, as Module.named_parameters() returns
    group = opt.param_groups[0]
    assert group["params"] == [net.weight, net.bias]
    assert all(p is q for p, q in zip(group["params"], [net.weight, net.bias]))
    assert group["param_names"] == ["weight", "bias"]
    _, named = _torch_twin(net)
    reference = torch.optim.RMSprop(named, lr=0.1)
    assert reference.param_groups[0]["param_names"] == group["param_names"]


def test_named_and_unnamed_steps_are_bit_identical() -> None:
    a, b = _Net(), _Net()
    opt_a, opt_b = RMSprop(a.named_parameters(), momentum=0.5), RMSprop(b.parameters(), momentum=0.5)
    for _ in range(3):
        _step(list(a.parameters()), opt_a)
        _step(list(b.parameters()), opt_b)
    for p, q in zip(a.parameters(), b.parameters()):
        assert p.data.tobytes() == q.data.tobytes()


def test_state_dict_layout_matches_torch() -> None:
    net = _Net()
    opt = RMSprop([{"params": [("weight", net.weight)], "lr": 0.3}, {"params": [("bias", net.bias)]}])
    _, named = _torch_twin(net)
    reference = torch.optim.RMSprop([{"params": named[:1], "lr": 0.3}, {"params": named[1:]}])
    ours, theirs = opt.state_dict()["param_groups"], reference.state_dict()["param_groups"]
    assert [g["param_names"] for g in ours] == [g["param_names"] for g in theirs] == [["weight"], ["bias"]]
    assert [g["params"] for g in ours] == [g["params"] for g in theirs] == [[0], [1]]
    # Without names, torch writes no param_names key at all; nor does Lucid.
    plain = RMSprop(_Net().parameters()).state_dict()["param_groups"][0]
    assert "param_names" not in plain
    assert "param_names" not in torch.optim.RMSprop(_torch_twin(_Net())[0]).state_dict()["param_groups"][0]


@pytest.mark.parametrize(
    ("saved_named", "loader_named", "expected"),
    [
        (True, False, ["weight", "bias"]),  # the saved names are taken
        (True, True, ["weight", "bias"]),  # and replace the loader's own
        (False, True, ["w0", "b0"]),  # a state_dict without names keeps the loader's
        (False, False, None),
    ],
)
def test_load_state_dict_takes_saved_names_or_keeps_its_own(saved_named, loader_named, expected) -> None:
    def build(named: bool, names: tuple[str, str], lib: str) -> object:
        net = _Net()
        params = list(net.parameters()) if lib == "lucid" else _torch_twin(net)[0]
        cls = RMSprop if lib == "lucid" else torch.optim.RMSprop
        return cls(list(zip(names, params)) if named else params, lr=0.2)

    for lib in ("lucid", "torch"):
        saver = build(saved_named, ("weight", "bias"), lib)
        loader = build(loader_named, ("w0", "b0"), lib)
        loader.load_state_dict(saver.state_dict())
        assert loader.param_groups[0].get("param_names") == expected, lib


def test_torch_named_state_dict_loads_into_lucid_and_back() -> None:
    from conformance.statedict import to_numpy, to_torch

    net = _Net()
    tparams, named = _torch_twin(net)
    reference = torch.optim.RMSprop(named, lr=0.05, momentum=0.9)
    for p in tparams:
        p.grad = torch.full_like(p, 0.25)
    reference.step()
    opt = RMSprop(net.parameters(), lr=1.0)
    opt.load_state_dict(to_numpy(reference.state_dict()))
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert opt.param_groups[0]["lr"] == 0.05
    back = torch.optim.RMSprop(_torch_twin(_Net())[0])
    back.load_state_dict(to_torch(opt.state_dict()))
    assert back.param_groups[0]["param_names"] == ["weight", "bias"]


def test_named_state_round_trips_through_a_file(tmp_path) -> None:
    net = _Net()
    opt = RMSprop(net.named_parameters(), centered=True)
    _step(list(net.parameters()), opt)
    path = tmp_path / "named.lucid"
    serialization.save_state_dict(opt.state_dict(), path)
    loaded = serialization.load_state_dict(path)
    assert loaded["param_groups"][0]["param_names"] == ["weight", "bias"]
    fresh = RMSprop(_Net().parameters())
    fresh.load_state_dict(loaded)
    assert fresh.param_groups[0]["param_names"] == ["weight", "bias"]
    assert fresh.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_serialization_refuses_names_that_are_not_strings(tmp_path) -> None:
    sd = RMSprop(_Net().named_parameters()).state_dict()
    sd["param_groups"][0]["param_names"] = ["weight", 3]
    with pytest.raises(TypeError, match=r"\['param_names'\]: must be a list of str"):
        serialization.save_state_dict(sd, tmp_path / "bad.lucid")
    assert not (tmp_path / "bad.lucid").exists()


def test_a_file_with_names_that_are_not_strings_is_refused(tmp_path, monkeypatch) -> None:
    """Loading checks param_names too: a file written without the saver's check (as a hostile one may be)."""
    sd = RMSprop(_Net().named_parameters()).state_dict()
    sd["param_groups"][0]["param_names"] = ["weight", 3]
    with monkeypatch.context() as patched:
        patched.setattr(serialization, "_json_names", lambda value, where: list(value))
        serialization.save_state_dict(sd, tmp_path / "crafted.lucid")
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['param_names'\]\[1\]: must be a string, found 3"):
        serialization.load_state_dict(tmp_path / "crafted.lucid")


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda n: [("weight", n.weight), n.bias], ValueError, "with or without names"),
        (lambda n: [n.weight, ("bias", n.bias)], ValueError, "with or without names"),
        (lambda n: [{"params": [("weight", n.weight)]}, {"params": [n.bias]}], ValueError, "with or without names"),
        (lambda n: [{"params": [n.weight]}, {"params": [("bias", n.bias)]}], ValueError, "with or without names"),
        (lambda n: [(1, n.weight)], TypeError, r"\(int, Parameter\)"),
        (lambda n: [("weight", n.weight, 0)], TypeError, "a named parameter is a"),
        (lambda n: [("weight", n.weight.data)], TypeError, "can only optimize Tensors"),
        (lambda n: [{"params": [n.weight], "param_names": ["a", "b"]}], ValueError, "2 names for 1 parameters"),
        (lambda n: [{"params": [n.weight], "param_names": "weight"}], TypeError, "must be a list of str"),
    ],
    ids=["pair-then-plain", "plain-then-pair", "named-group-then-plain", "plain-group-then-named", "int-name",
         "triple", "array-not-tensor", "names-count", "names-str"],
)  # fmt: skip
def test_mixed_or_malformed_names_are_refused(make, error, match) -> None:
    net = _Net()
    with pytest.raises(error, match=match):
        RMSprop(make(net))


def test_torch_refuses_the_same_mixtures() -> None:
    """The mixtures Lucid refuses with ValueError, torch 2.13 refuses too (names of other types it accepts)."""
    w, b = (torch.nn.Parameter(torch.zeros(2)) for _ in range(2))
    with pytest.raises(ValueError, match="with/without names"):
        torch.optim.RMSprop([("w", w), b])
    with pytest.raises(ValueError, match="with/without names"):
        torch.optim.RMSprop([{"params": [("w", w)]}, {"params": [b]}])


def test_a_refused_group_leaves_the_optimizer_as_it_was() -> None:
    net, extra = _Net(), Parameter(np.zeros(3, dtype=np.float32))
    opt = RMSprop([("weight", net.weight)])
    before = opt.state_dict()
    with pytest.raises(ValueError, match="without names"):
        opt.add_param_group({"params": [extra]})
    assert opt.state_dict() == before and len(opt.param_groups) == 1
    opt.add_param_group({"params": [("extra", extra)], "lr": 0.5})
    assert opt.param_groups[1]["param_names"] == ["extra"] and opt.param_groups[1]["lr"] == 0.5


def test_a_refused_load_leaves_names_as_they_were() -> None:
    net = _Net()
    opt = RMSprop(net.named_parameters())
    sd = opt.state_dict()
    sd["param_groups"][0]["param_names"] = ["only-one"]
    with pytest.raises(ValueError, match="1 names for 2 parameters"):
        opt.load_state_dict(sd)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]


def test_names_are_not_hyperparameters() -> None:
    """A step reads the group's hyperparameters; param_names is not one (and is not refused as unknown)."""
    net = _Net()
    opt = RMSprop(net.named_parameters())
    _step(list(net.parameters()), opt)
    assert opt.state[net.weight]["step"] == 1.0
    assert lucid.optim.optimizer.hyperparameters(opt.param_groups[0]).keys().isdisjoint({"params", "param_names"})
