import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastsurface as fs
from fastsurface.analysis.metrics import accuracy, metric_surfaces, per_class_surfaces, train_test_surfaces
from tests.helpers import assert_close


def _classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _probe(model, a, b):
    """A float64 copy of ``model`` with the plane's two entries set to ``(a, b)``."""
    probe = _classifier().double()
    probe.load_state_dict(model.state_dict())
    with torch.no_grad():
        probe[0].weight[0, 1], probe[2].bias[2] = a, b
    return probe


PLANE_ENTRIES = ("0.weight[0, 1]", "2.bias[2]")


def test_accuracy_beside_the_loss_matches_a_per_point_loop(rng):
    model = _classifier()
    x, y = rng.normal(size=(120, 4)), rng.integers(0, 3, size=120)
    plane = fs.entry_plane(model, *PLANE_ENTRIES)
    w1, w2 = np.linspace(-3, 3, 4), np.linspace(-3, 3, 5)
    surfaces = metric_surfaces(
        model, (x, y), w1, w2, plane=plane, metrics={"loss": "cross_entropy", "accuracy": accuracy}, dtype="float64"
    )
    expected = np.zeros((len(w1), len(w2)))
    for i, a in enumerate(w1):
        for j, b in enumerate(w2):
            with torch.no_grad():
                expected[i, j] = (_probe(model, a, b)(torch.tensor(x)).argmax(1) == torch.tensor(y)).double().mean()
    assert_close(surfaces["accuracy"].loss, expected, rtol=1e-12)
    assert surfaces["loss"].loss_name == "cross_entropy" and list(surfaces) == ["loss", "accuracy"]
    assert (surfaces["accuracy"].metric, surfaces["accuracy"].higher_is_better) == ("accuracy", True)
    assert (surfaces["loss"].metric, surfaces["loss"].higher_is_better) == ("loss", False)


def _margin(prediction, target):
    """The correct class's logit minus the largest other one, per sample."""
    correct = prediction.gather(1, target[:, None])[:, 0]
    others = prediction.masked_fill(F.one_hot(target, prediction.shape[1]).bool(), -torch.inf)
    return correct - others.max(dim=1).values


# Every kind a metric may be given as: a string, fs.accuracy, a torch module, a callable.
METRICS = {
    "loss": "cross_entropy",
    "accuracy": "accuracy",
    "smoothed": nn.CrossEntropyLoss(label_smoothing=0.1),
    "nll": "nll",
    "margin": _margin,
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_pass_gives_each_metric_exactly_its_separate_pass_on_the_vmap_route(rng, dtype):
    """The same predictions, each metric's sums computed as alone: equal bit for bit."""
    model = _classifier()
    x, y = rng.normal(size=(300, 4)).astype(np.float32), rng.integers(0, 3, size=300)
    plane = fs.random_plane(model, seed=3)
    w = np.linspace(-1, 1, 5)
    common = {"plane": plane, "method": "vmap", "dtype": dtype, "batch_size": 64}
    for reduction in ("mean", "batch_mean"):
        together = metric_surfaces(model, (x, y), w, w, metrics=METRICS, reduction=reduction, **common)
        for name, metric in METRICS.items():
            alone = fs.loss_surface(model, (x, y), w, w, loss=metric, reduction=reduction, **common)
            assert np.array_equal(together[name].loss, alone.loss), (name, reduction)
            assert together[name].method == alone.method == "vmap"


def test_one_pass_reads_a_one_shot_iterator_once(rng):
    model = _classifier()
    x, y = rng.normal(size=(96, 4)), rng.integers(0, 3, size=96)
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]
    plane = fs.random_plane(model, seed=0)
    metrics = {"loss": "cross_entropy", "accuracy": "accuracy"}
    once = metric_surfaces(model, iter(batches), [0.0, 0.5], [0.0], plane=plane, metrics=metrics, dtype="float64")
    listed = metric_surfaces(model, batches, [0.0, 0.5], [0.0], plane=plane, metrics=metrics, dtype="float64")
    assert all(np.array_equal(once[name].loss, listed[name].loss) for name in metrics)
    assert once["loss"].samples == 96


def test_a_lone_metric_is_the_loss_surface_itself_closed_form_included(seed_split):
    _, test = seed_split
    grid = fs.axis(-1, 1, 0.5)
    (surface,) = metric_surfaces(fs.ANN(1, 1, 1), test, grid, grid, metrics={"error": "mse"}).values()
    plain = fs.loss_surface(fs.ANN(1, 1, 1), test, grid, grid)
    assert np.array_equal(surface.loss, plain.loss) and surface.method == plain.method == "closed_form"
    assert surface.metric == "error"


def test_per_class_means_match_a_naive_loop_with_each_class_count_as_denominator(rng):
    model = _classifier()
    y = np.repeat([0, 1, 2], [50, 17, 3])  # unbalanced: a mean over C classes would be wrong
    x = rng.normal(size=(len(y), 4))
    plane = fs.entry_plane(model, *PLANE_ENTRIES)
    w1, w2 = np.linspace(-2, 2, 3), np.linspace(-1, 1, 4)
    metrics = {"loss": "cross_entropy", "accuracy": "accuracy"}
    classes = per_class_surfaces(model, (x, y), w1, w2, plane=plane, metrics=metrics, dtype="float64", batch_size=16)
    for c, count in enumerate([50, 17, 3]):
        expected = {name: np.zeros((len(w1), len(w2))) for name in metrics}
        for i, a in enumerate(w1):
            for j, b in enumerate(w2):
                with torch.no_grad():
                    logits = _probe(model, a, b)(torch.tensor(x[y == c]))
                target = torch.tensor(y[y == c])
                expected["loss"][i, j] = F.cross_entropy(logits, target).item()
                expected["accuracy"][i, j] = (logits.argmax(1) == target).double().mean().item()
        for name in metrics:
            assert_close(classes[name][c].loss, expected[name], rtol=1e-12)
            assert classes[name][c].samples == count and classes[name][c].metric == f"{name} (class {c})"
    assert classes["accuracy"][0].higher_is_better and not classes["loss"][0].higher_is_better


def test_a_class_the_data_lack_gives_nan_and_no_samples(rng):
    model = _classifier()
    x, y = rng.normal(size=(40, 4)), rng.integers(0, 2, size=40)  # no class 2
    classes = per_class_surfaces(model, (x, y), [0.0], [0.0], plane=fs.random_plane(model, seed=0))
    assert classes["loss"][2].samples == 0 and np.isnan(classes["accuracy"][2].loss).all()
    assert sum(surface.samples for surface in classes["loss"]) == 40


@pytest.mark.parametrize(
    ("targets", "options", "match"),
    [
        (np.zeros((8, 2), dtype=np.int64), {}, "one class index per sample"),
        (np.zeros(8, dtype=np.int64), {"reduction": "batch_mean"}, "`reduction` must be 'mean'"),
        (np.full(8, 3), {}, r"lie in \[0, 3\)"),
    ],
)
def test_per_class_metrics_refuse_what_has_no_per_class_mean(rng, targets, options, match):
    model = nn.Sequential(nn.Linear(4, 3)) if targets.ndim == 1 else nn.Sequential(nn.Conv1d(4, 3, 1))
    x = rng.normal(size=(8, 4) if targets.ndim == 1 else (8, 4, 2))
    with pytest.raises(fs.FastsurfaceError, match=match):
        per_class_surfaces(model, (x, targets), [0.0], [0.0], plane=fs.random_plane(model, seed=0), **options)


def test_train_and_test_surfaces_and_their_gap_oriented_worse_on_test(rng):
    model = _classifier()
    train = rng.normal(size=(80, 4)), rng.integers(0, 3, size=80)
    test = rng.normal(size=(50, 4)), rng.integers(0, 3, size=50)
    plane = fs.random_plane(model, seed=2)
    w = np.linspace(-1, 1, 3)
    common = {"plane": plane, "dtype": "float64"}
    both = train_test_surfaces(model, train, test, w, w, metrics={"loss": "cross_entropy", "acc": "accuracy"}, **common)
    for name, loss in (("loss", "cross_entropy"), ("acc", "accuracy")):
        alone = [fs.loss_surface(model, data, w, w, loss=loss, **common).loss for data in (train, test)]
        assert np.array_equal(both[name].train.loss, alone[0]) and np.array_equal(both[name].test.loss, alone[1])
        worse = alone[1] - alone[0] if name == "loss" else alone[0] - alone[1]
        assert np.array_equal(both[name].gap.loss, worse)
        assert both[name].gap.metric == f"{name} gap" and not both[name].gap.higher_is_better
    assert both["acc"].train.samples == 80 and both["acc"].test.samples == 50


def test_best_follows_the_direction_and_argmin_stays_the_lowest(rng):
    model = _classifier()
    x, y = rng.normal(size=(60, 4)), rng.integers(0, 3, size=60)
    w = np.linspace(-4, 4, 9)
    surfaces = metric_surfaces(
        model, (x, y), w, w, plane=fs.entry_plane(model, *PLANE_ENTRIES), metrics={"acc": "accuracy", "ce": "nll"}
    )
    acc = surfaces["acc"]
    assert acc.best()[2] == acc.loss.max() and acc.argmin()[2] == acc.loss.min() < acc.loss.max()
    assert surfaces["ce"].best() == surfaces["ce"].argmin()


def test_a_callable_can_be_marked_higher_is_better(rng):
    model = _classifier()
    x, y = rng.normal(size=(20, 4)), rng.integers(0, 3, size=20)
    surfaces = metric_surfaces(
        model, (x, y), [0.0], [0.0], plane=fs.random_plane(model), metrics={"m": _margin}, higher_is_better=["m"]
    )
    assert surfaces["m"].higher_is_better and surfaces["m"].metric == "m"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": {}}, "`metrics`"),
        ({"metrics": {"a": "mse"}, "loss": "mse"}, "`loss`"),
        ({"metrics": {"acc": "acc"}}, r"`metrics\['acc'\]` must be one of the strings .*'accuracy'.*fs\.accuracy"),
        ({"metrics": {"a": "mse"}, "higher_is_better": ["b"]}, "`higher_is_better` must name metrics"),
        ({"metrics": {"a": "mse"}, "higher_is_better": "a"}, "`higher_is_better` must be a collection"),
        ({"metrics": {"": "mse"}}, "keyed by non-empty strings"),
        ({"metrics": {"l1": nn.L1Loss(reduction="sum")}}, r"`metrics\['l1'\]`: L1Loss\(reduction='sum'\)"),
    ],
)
def test_metric_arguments_are_checked(kwargs, match):
    with pytest.raises(fs.FastsurfaceError, match=match):
        metric_surfaces(fs.ANN(1, 1, 1), (np.zeros(4), np.zeros(4)), [0.0], [0.0], **kwargs)


def test_a_metric_surface_from_one_pass_continues_with_its_own_metric(rng):
    """Each surface of a combined pass remembers its own metric (not the combined objective),
    so refining it needs neither plane= nor loss= and equals a fresh pass of that metric."""
    model = _classifier()
    x, y = rng.normal(size=(90, 4)), rng.integers(0, 3, size=90)
    plane = fs.entry_plane(model, *PLANE_ENTRIES)
    grid = np.linspace(-1, 1, 3)
    margin = lambda p, t: p.max(dim=1).values - p.min(dim=1).values  # noqa: E731
    surfaces = metric_surfaces(
        model, (x, y), grid, grid, plane=plane, metrics={"loss": "cross_entropy", "margin": margin}, dtype="float64"
    )
    assert surfaces["loss"].loss_function is None and surfaces["margin"].loss_function is not None
    finer = fs.refine(surfaces["margin"], model, (x, y), ((-1, 1), (-1, 1)), 0.5)
    alone = fs.loss_surface(model, (x, y), finer.w1, finer.w2, plane=plane, loss=margin, dtype="float64")
    assert finer.metric == "margin"
    assert_close(finer.loss, alone.loss, rtol=1e-12, atol=0)
