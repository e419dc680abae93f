"""The training side of `nmc sparsify`: ELSA's supernet (masks, straight-through gradients,
sampling), SparseViT's adaptation sampling, resumable runs, the accuracy-scored search."""

import itertools
import random

import pytest
import torch

from nmc.training.nm_supernet import FixedNM, NMSupernet
from nmc.training.run import Dense, Run, SparsifyError, TrainSettings, evaluate
from nmc.training.window_supernet import WindowAdaptation
from nmc.compiler.sparsity.elsa import LayerChoices, SearchSize, search
from nmc.models.datasets import Split
from nmc.models.nm_sparsity import apply_nm, nm_mask
from nmc.models.registry import build_model

TINY = {"dim": 16, "depth": 1, "heads": 2, "img_size": 8, "patch": 4, "num_classes": 3}
LINEARS = ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]


def _tiny(seed=0):
    model, _ = build_model("deit_digits", TINY, seed=seed)
    return model


def _data(n=40, seed=0):
    """Three classes told apart by which third of the image is bright."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randn(n, 3, 8, 8, generator=gen) * 0.3
    for i, c in enumerate(labels):
        images[i, :, :, c * 2:c * 2 + 3] += 2.0
    return Split(images, labels)


def _net(model, patterns=(None, (2, 4), (1, 4)), steps=10):
    return NMSupernet(model, [f"{n}.weight" for n in LINEARS], [list(patterns)] * 4, steps)


def test_masked_forward_is_the_apply_nm_reference():
    model = _tiny()
    net = _net(model)
    choice = [1, 2, 0, 1]
    config = {n: p for n, p in zip(LINEARS, [(2, 4), (1, 4), (4, 4), (2, 4)])}
    x = _data().images[:5]
    with torch.no_grad():
        want = apply_nm(model, config)(x)
        got = net.run(x, choice)
        dense = model(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(got, dense)  # the masks did something
    # baking writes the same masked weights into the model
    net.bake(choice)
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=0, atol=0)


def test_straight_through_gradient_reaches_pruned_weights():
    model = _tiny()
    net = _net(model)
    net.choice = [2, 2, 2, 2]  # 1:4 everywhere
    data = _data()
    torch.nn.functional.cross_entropy(net.forward(data.images), data.labels).backward()
    w = model.get_parameter("blocks.0.mlp.fc1.weight")
    pruned = ~nm_mask(w.detach(), 1, 4)
    assert w.grad[pruned].abs().sum() > 0  # dense gradient, not a masked one


def test_sampling_moves_from_dense_to_sparse_and_follows_accuracy():
    net = _net(_tiny(), patterns=(None, (2, 4), (1, 8)), steps=100)
    first = net.probabilities()[0]
    assert first[0] > first[1] > first[2]  # dense-favouring at the start
    net.step = 100
    last = net.probabilities()[0]
    assert last[2] > last[1] > last[0]  # sparse-favouring at the end
    net.step = 50  # neutral prior: the running accuracy decides
    net.acc[0] = [0.9, 0.9, 0.5]
    mid = net.probabilities()[0]
    assert mid[0] == pytest.approx(mid[1]) and mid[2] < mid[0] / 10
    # end_step credits the choices used with the batch's accuracy
    net.choice = [1, 1, 1, 1]
    logits = torch.eye(3)[[0, 1, 2, 0]]
    net.end_step(logits, torch.tensor([0, 1, 2, 1]))
    assert net.acc[1][1] > 0.5 and net.acc[1][0] == 0.5 and net.step == 51


def test_window_adaptation_samples_nested_ratios():
    model, _ = build_model("swin_digits", {"embed_dim": 8}, seed=0)
    stages = model.block_names()
    adapt = WindowAdaptation(model, stages)
    rng = random.Random(0)
    seen = set()
    for _ in range(50):
        config = adapt.sample(rng)
        for stage in stages:  # nested per grid parity: the even blocks, the odd ones
            for parity in (stage[0::2], stage[1::2]):
                ratios = [config[b] for b in parity]
                assert ratios == sorted(ratios, reverse=True)
        seen.update(config.values())
    assert len(seen) >= 6 and 1.0 in seen
    adapt.begin_step(rng)
    x = torch.randn(2, 3, 32, 32)
    out = adapt.forward(x)
    model.set_window_keep(adapt.config)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)  # the reference model's


def test_training_learns_and_resume_is_bit_identical(tmp_path):
    data = _data(60)
    settings = TrainSettings(epochs=4, batch_size=16, lr=3e-3)

    def train(path, stop=None, restart=False):
        model = _tiny()
        run = Run(model, path, {"case": "t"}, seed=5, log=lambda s: None,
                  stop_after_epochs=stop, restart=restart)
        net = _net(model, steps=4 * 4)
        run.train("supernet", net, data, settings)
        return model, net

    whole, net_whole = train(None)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(ckpt, stop=2)
    resumed, net_resumed = train(ckpt)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert net_whole.acc == net_resumed.acc and net_whole.step == net_resumed.step
    # training did something: the dense accuracy rose well above chance
    fresh = _tiny()
    assert evaluate(whole, data)[0] > evaluate(fresh, data)[0] + 0.2
    # another seed or other options are refused, --restart starts over
    with pytest.raises(SparsifyError, match="other options or another seed"):
        Run(_tiny(), ckpt, {"case": "other"}, seed=5)
    Run(_tiny(), ckpt, {"case": "other"}, seed=5, restart=True)
    ckpt.write_bytes(b"junk")
    with pytest.raises(SparsifyError, match="cannot be read"):
        Run(_tiny(), ckpt, {"case": "t"}, seed=5)


def test_fixed_pattern_fine_tune_keeps_the_pattern():
    model = _tiny()
    data = _data()
    run = Run(model, None, {}, 0, log=lambda s: None)
    net = FixedNM(model, [f"{n}.weight" for n in LINEARS], [(1, 4)] * 4)
    run.train("finetune", net, data, TrainSettings(epochs=2, batch_size=16))
    net.bake([0] * 4)
    for n in LINEARS:
        w = model.get_parameter(f"{n}.weight").detach()
        assert int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 1


def test_dense_regime_is_the_plain_model():
    model = _tiny()
    x = _data().images[:3]
    assert torch.equal(Dense(model).forward(x), model(x))


def test_search_with_a_whole_configuration_score_finds_the_best():
    """With scores_of, the search ranks by it, not by the layers' summed errors (which
    then only guide the repair): on a small space it finds the brute-force optimum
    within the budget, which the summed errors miss."""
    costs = [10.0, 6.0, 3.0]
    errors = [[0.0, 0.1, 0.2]] * 3 + [[0.0, 0.01, 0.02]]  # the proxy favours layer 3
    layers = [LayerChoices(f"l{i}", [None, (2, 4), (1, 4)], errors[i], costs)
              for i in range(4)]

    def score(choice):  # but layer 3 sparse is what really hurts
        return sum(c * w for c, w in zip(choice, (0.011, 0.023, 0.031, 0.05))) \
            + (1.0 if choice[3] else 0.0)

    budget = 28.0
    feasible = [c for c in itertools.product(range(3), repeat=4)
                if sum(costs[i] for i in c) <= budget]
    best = min(feasible, key=lambda c: (score(list(c)), sum(costs[i] for i in c)))
    assert best == (1, 1, 1, 0)
    for seed in range(3):
        found = search(layers, 0.0, budget, "speedup", 40 / 28,
                       scores_of=lambda choices: [score(c) for c in choices],
                       size=SearchSize(population=20, keep=5, mutations=10, crossovers=10,
                                       generations=10), seed=seed)
        assert tuple(found.choice) == best and found.error == pytest.approx(score(list(best)))
        assert found.cost <= budget
    plain = search(layers, 0.0, budget, "speedup", 40 / 28)
    assert plain.choice[3] != 0


def test_distillation_loss_is_kl_at_temperature_plus_half_cross_entropy():
    """Against the formula written out with numpy: T^2 x mean over rows of
    sum_c p_t (log p_t - log p_s) at temperature T, + 0.5 x the mean cross-entropy."""
    import numpy as np

    from nmc.training.distill import CE_WEIGHT, TEMPERATURE, distillation_loss

    gen = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen) * 3
    labels = torch.tensor([0, 3, 1, 1, 2])

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    s, t = student.double().numpy(), teacher.double().numpy()
    lt, ls = log_softmax(t / TEMPERATURE), log_softmax(s / TEMPERATURE)
    kl = (np.exp(lt) * (lt - ls)).sum(-1).mean() * TEMPERATURE ** 2
    ce = -log_softmax(s)[np.arange(5), labels.numpy()].mean()
    expected = kl + CE_WEIGHT * ce
    got = distillation_loss(student, teacher, labels)
    assert abs(float(got) - expected) < 1e-5 and CE_WEIGHT == 0.5 and TEMPERATURE == 2.0
    total = distillation_loss(student, teacher, labels, reduction="sum")
    assert abs(float(total) - 5 * expected) < 5e-5
    with pytest.raises(ValueError, match="reduction"):
        distillation_loss(student, teacher, labels, reduction="none")


def test_distilled_training_follows_the_teacher_not_the_labels():
    """A teacher that always answers the next class after the label: trained with
    distill=True the model learns the teacher's answers, without it the labels'."""
    from nmc.training.run import pretrain

    data = _data(60)
    wrong = (data.labels + 1) % 3
    agree = {}
    for distill in (False, True):
        model = _tiny()
        run = Run(model, None, {}, 0, log=lambda s: None)
        pretrain(run, model, {"train": data, "val": data, "test": data}, 0, teacher=True)
        # the recorded teacher is the model as the sparse stages find it
        torch.testing.assert_close(run.result("teacher"), model.eval()(data.images),
                                   rtol=0, atol=1e-5)
        run.state["results"]["teacher"] = torch.nn.functional.one_hot(wrong, 3).float() * 8
        run.train("finetune", Dense(model), data,
                  TrainSettings(epochs=6, batch_size=16, lr=3e-3, distill=distill))
        predicted = model.eval()(data.images).argmax(-1)
        agree[distill] = (float((predicted == data.labels).float().mean()),
                          float((predicted == wrong).float().mean()))
    assert agree[False][0] > agree[False][1] + 0.3, agree  # labels
    assert agree[True][1] > agree[True][0] + 0.3, agree  # the teacher


def test_a_stage_that_distils_needs_a_recorded_teacher():
    model = _tiny()
    run = Run(model, None, {}, 0, log=lambda s: None)
    with pytest.raises(RuntimeError, match="no teacher was recorded"):
        run.train("finetune", Dense(model), _data(), TrainSettings(epochs=1, distill=True))


def test_a_rank_without_teacher_images_sends_rows_of_the_logits_width(monkeypatch):
    """Under data-parallel training a rank whose part of the split is empty (fewer images
    than ranks) still takes part in the gather with [0, classes] rows, the shape every
    other rank sends; a shapeless tensor would make the collective fail."""
    from nmc.training import data_parallel, distill

    sent = []
    monkeypatch.setattr(data_parallel, "size", lambda: 2)
    monkeypatch.setattr(data_parallel, "shard", lambda count: slice(count, count))
    monkeypatch.setattr(data_parallel, "gather_rows",
                        lambda rows, count: sent.append(rows.shape) or rows)
    distill.teacher_logits(_tiny().eval(), _data(n=1))
    assert sent == [torch.Size([0, 3])]
