import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastsurface as fs
from fastsurface.engine._losses import by_class, combine, resolve_loss
from tests.helpers import assert_close


def _classifier():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def test_cross_entropy_matches_a_per_point_loop(rng):
    model = _classifier()
    x = rng.normal(size=(90, 4))
    y = rng.integers(0, 3, size=90)
    plane = fs.entry_plane(model, "0.weight[1, 2]", "2.weight[0, 5]")
    w1, w2 = np.linspace(-1, 1, 3), np.linspace(-2, 2, 4)
    surface = fs.loss_surface(model, (x, y), w1, w2, plane=plane, loss="cross_entropy", dtype="float64")
    expected = np.zeros((3, 4))
    for i, a in enumerate(w1):
        for j, b in enumerate(w2):
            probe = _with_entries(model, a, b)
            expected[i, j] = F.cross_entropy(probe(torch.tensor(x)), torch.tensor(y)).item()
    assert_close(surface.loss, expected, rtol=1e-12)
    assert surface.loss_name == "cross_entropy"


def test_cross_entropy_over_positions_is_each_sample_s_mean(rng):
    """Logits ``(S, C, L)`` against targets ``(S, L)``: a sample's loss is the mean over its
    positions, so ``"mean"`` equals torch's mean over all positions."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1))
    x = torch.as_tensor(rng.normal(size=(30, 2, 5)))
    y = torch.as_tensor(rng.integers(0, 3, size=(30, 5)))
    plane = fs.entry_plane(model, "0.weight[0, 1, 2]", "0.bias[2]")
    w = np.linspace(-1, 1, 3)
    surface = fs.loss_surface(model, (x, y), w, w, plane=plane, loss="cross_entropy", dtype="float64")
    expected = np.zeros((3, 3))
    for i, a in enumerate(w):
        for j, b in enumerate(w):
            probe = copy.deepcopy(model).double()
            with torch.no_grad():
                probe[0].weight[0, 1, 2], probe[0].bias[2] = a, b
            expected[i, j] = F.cross_entropy(probe(x), y).item()
    assert_close(surface.loss, expected, rtol=1e-12)


def _with_entries(model, a, b):
    probe = _classifier().double()
    probe.load_state_dict(model.state_dict())
    with torch.no_grad():
        probe[0].weight[1, 2] = a
        probe[2].weight[0, 5] = b
    return probe


def test_a_callable_loss_is_reduced_per_sample(rng):
    x, y = rng.normal(size=40), rng.normal(size=40)

    def absolute_error(prediction, target):
        return (prediction - target).abs().reshape(len(target), -1).mean(dim=1)

    surface = fs.loss_surface(fs.ANN(1, 1, 1), (x, y), [0.5], [1.5], loss=absolute_error, dtype="float64")
    assert_close(surface.loss[0, 0], np.abs(1.5 * np.tanh(0.5 * x) - y).mean(), rtol=1e-12)
    assert surface.loss_name == "absolute_error"


def test_a_callable_that_does_not_return_per_sample_losses_is_refused(rng):
    x, y = rng.normal(size=10), rng.normal(size=10)
    with pytest.raises(fs.FastsurfaceError, match="`loss` must return one loss per sample"):
        fs.loss_surface(fs.ANN(1, 1, 1), (x, y), [0.5], [1.5], loss=lambda p, t: ((p - t) ** 2).mean())


def test_cross_entropy_refuses_real_valued_targets(rng):
    with pytest.raises(fs.FastsurfaceError, match="cross-entropy needs"):
        fs.loss_surface(
            _classifier(),
            (rng.normal(size=(10, 4)), rng.normal(size=10)),
            [0.0],
            [0.0],
            plane=fs.entry_plane(_classifier(), "0.weight[0, 0]", "2.bias[0]"),
            loss="cross_entropy",
        )


def test_unknown_losses_are_refused():
    with pytest.raises(fs.FastsurfaceError, match="`loss`"):
        fs.loss_surface(fs.ANN(1, 1, 1), (np.zeros(3), np.zeros(3)), [0.0], [0.0], loss="hinge")


# torch's loss modules, as people write them: each surface point must equal the module's
# own value on all the data (its reduction='mean', or 'batchmean' for KLDivLoss).
def _targets(kind, rng, size):
    if kind == "classes":
        return rng.integers(0, 3, size=size)
    if kind == "labels":  # MultiLabelMarginLoss: class indices, padded with -1
        return np.where(rng.uniform(size=(size, 3)) < 0.5, rng.integers(0, 3, size=(size, 3)), -1)
    values = {
        "real": lambda: rng.normal(size=(size, 3)),
        "unit": lambda: rng.uniform(size=(size, 3)),
        "binary": lambda: (rng.uniform(size=(size, 3)) < 0.5).astype(float),
        "sign": lambda: rng.choice([-1.0, 1.0], size=(size, 3)),
        "probabilities": lambda: torch.softmax(torch.as_tensor(rng.normal(size=(size, 3))), 1).numpy(),
        "log_probabilities": lambda: torch.log_softmax(torch.as_tensor(rng.normal(size=(size, 3))), 1).numpy(),
        "counts": lambda: rng.poisson(2.0, size=(size, 3)).astype(float),
    }
    return values[kind]()


# torch has no vmap batching rule for kl_div, soft_margin_loss, multi_margin_loss and
# multilabel_margin_loss: it
# runs them point by point and says so.
_NO_BATCHING_RULE = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
MODULE_CASES = [
    pytest.param(nn.L1Loss(), None, "real", id="L1Loss"),
    pytest.param(nn.SmoothL1Loss(beta=0.3), None, "real", id="SmoothL1Loss-beta"),
    pytest.param(nn.HuberLoss(delta=0.5), None, "real", id="HuberLoss-delta"),
    pytest.param(nn.BCELoss(weight=torch.tensor([1.0, 2.0, 0.5])), nn.Sigmoid(), "unit", id="BCELoss-weight"),
    pytest.param(
        nn.BCEWithLogitsLoss(weight=torch.tensor([0.5, 1.0, 3.0]), pos_weight=torch.tensor([2.0, 1.0, 0.5])),
        None,
        "binary",
        id="BCEWithLogitsLoss-weights",
    ),
    pytest.param(
        nn.KLDivLoss(reduction="batchmean"),
        nn.LogSoftmax(1),
        "probabilities",
        id="KLDivLoss-batchmean",
        marks=_NO_BATCHING_RULE,
    ),
    pytest.param(
        nn.KLDivLoss(reduction="batchmean", log_target=True),
        nn.LogSoftmax(1),
        "log_probabilities",
        id="KLDivLoss-log-target",
        marks=_NO_BATCHING_RULE,
    ),
    pytest.param(nn.PoissonNLLLoss(full=True), None, "counts", id="PoissonNLLLoss-full"),
    pytest.param(nn.SoftMarginLoss(), None, "sign", id="SoftMarginLoss", marks=_NO_BATCHING_RULE),
    pytest.param(nn.HingeEmbeddingLoss(margin=2.0), None, "sign", id="HingeEmbeddingLoss-margin"),
    pytest.param(
        nn.MultiLabelSoftMarginLoss(weight=torch.tensor([1.0, 3.0, 0.5])), None, "binary", id="MultiLabelSoftMargin"
    ),
    pytest.param(nn.CrossEntropyLoss(label_smoothing=0.1), None, "classes", id="CrossEntropyLoss-smoothing"),
    pytest.param(nn.CrossEntropyLoss(), None, "classes", id="CrossEntropyLoss"),
    pytest.param(nn.NLLLoss(), nn.LogSoftmax(1), "classes", id="NLLLoss"),
    pytest.param(nn.MSELoss(), None, "real", id="MSELoss"),
    pytest.param(
        nn.MultiMarginLoss(p=2, margin=0.5, weight=torch.tensor([1.0, 2.0, 0.5])),
        None,
        "classes",
        id="MultiMarginLoss-options",
        marks=_NO_BATCHING_RULE,
    ),
    pytest.param(nn.MultiLabelMarginLoss(), None, "labels", id="MultiLabelMarginLoss", marks=_NO_BATCHING_RULE),
]


@pytest.mark.parametrize(("module", "last", "targets"), MODULE_CASES)
def test_a_torch_loss_module_gives_its_own_value_on_all_the_data(rng, module, last, targets):
    model = _classifier() if last is None else nn.Sequential(*_classifier(), last)
    x, y = rng.normal(size=(70, 4)), _targets(targets, rng, 70)
    plane = fs.entry_plane(model, "0.weight[1, 2]", "2.weight[0, 5]")
    w1, w2 = np.linspace(-1, 1, 3), np.linspace(-2, 2, 2)
    surface = fs.loss_surface(model, (x, y), w1, w2, plane=plane, loss=module, dtype="float64", batch_size=16)
    reference = copy.deepcopy(module).double()
    expected = np.zeros((3, 2))
    for i, a in enumerate(w1):
        for j, b in enumerate(w2):
            probe = copy.deepcopy(model).double()
            with torch.no_grad():
                probe[0].weight[1, 2], probe[2].weight[0, 5] = a, b
                expected[i, j] = reference(probe(torch.tensor(x)), torch.tensor(y)).item()
    assert_close(surface.loss, expected, rtol=1e-12)
    assert module.reduction in ("mean", "batchmean") and all(t.dtype == torch.float32 for t in module.buffers())


def test_the_default_modules_are_the_named_losses(seed_split):
    _, test = seed_split
    grid = fs.axis(-1, 1, 0.5)
    surface = fs.loss_surface(fs.ANN(1, 1, 1), test, grid, grid, loss=nn.MSELoss())
    assert surface.loss_name == "mse" and surface.method == "closed_form"
    named = fs.loss_surface(fs.ANN(1, 1, 1), test, grid, grid, loss="mse")
    assert np.array_equal(surface.loss, named.loss)
    assert fs.loss_surface(_classifier(), **_class_problem(), loss=nn.CrossEntropyLoss()).loss_name == "cross_entropy"


def _class_problem():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 4)), rng.integers(0, 3, size=20)
    return {"data": data, "w1": [0.0], "w2": [0.0], "plane": fs.random_plane(_classifier(), seed=0)}


def test_nll_and_accuracy_strings(rng):
    model = nn.Sequential(*_classifier(), nn.LogSoftmax(1))
    x, y = rng.normal(size=(50, 4)), rng.integers(0, 3, size=50)
    plane = fs.random_plane(model, seed=1)
    w = np.linspace(-1, 1, 3)
    nll = fs.loss_surface(model, (x, y), w, w, plane=plane, loss="nll", dtype="float64")
    by_module = fs.loss_surface(model, (x, y), w, w, plane=plane, loss=nn.NLLLoss(), dtype="float64")
    assert np.array_equal(nll.loss, by_module.loss) and nll.loss_name == "nll" and nll.metric == "loss"
    accuracy = fs.loss_surface(model, (x, y), w, w, plane=plane, loss="accuracy", dtype="float64")
    same = fs.loss_surface(model, (x, y), w, w, plane=plane, loss=fs.accuracy, dtype="float64")
    assert np.array_equal(accuracy.loss, same.loss) and (accuracy.metric, accuracy.higher_is_better) == (
        "accuracy",
        True,
    )


@pytest.mark.parametrize(
    ("loss", "match"),
    [
        (nn.MSELoss(reduction="sum"), r"MSELoss\(reduction='sum'\) is not a mean over samples"),
        (nn.L1Loss(reduction="none"), r"L1Loss\(reduction='none'\) is not a mean over samples"),
        (nn.CrossEntropyLoss(weight=torch.ones(3)), "class weight as the denominator"),
        (nn.NLLLoss(ignore_index=0), r"NLLLoss\(ignore_index=0\) averages over the targets not ignored"),
        (nn.GaussianNLLLoss(), r"must be one of the strings .*nn\.CrossEntropyLoss.*GaussianNLLLoss\(\)"),
        (nn.MSELoss, "must be one of the strings"),
        ("hinge", r"'mse', 'cross_entropy', 'nll', 'accuracy' \('accuracy' is fs\.accuracy\)"),
    ],
)
def test_losses_without_a_per_sample_mean_are_refused_saying_what_exists(loss, match):
    with pytest.raises(fs.FastsurfaceError, match=match):
        fs.loss_surface(_classifier(), **_class_problem(), loss=loss)


def test_a_weight_with_a_sample_axis_is_refused(rng):
    x, y = rng.normal(size=(20, 4)), rng.uniform(size=(20, 3))
    loss = nn.BCEWithLogitsLoss(weight=torch.ones(20, 3))
    with pytest.raises(fs.FastsurfaceError, match="weight has shape \\(20, 3\\), with a sample axis"):
        fs.loss_surface(_classifier(), (x, y), [0.0], [0.0], plane=fs.random_plane(_classifier()), loss=loss)


def test_record_path_trains_on_a_loss_module_as_torch_does(rng):
    """One full-batch SGD step on the module's per-sample mean is the module's own step."""
    x, y = rng.normal(size=(40, 4)), rng.normal(size=(40, 3))
    loss = nn.HuberLoss(delta=0.5)
    path = fs.record_path(_classifier(), (x, y), loss=loss, batch_size=40, record="step", dtype="float64")
    model = _classifier().double()
    loss(model(torch.tensor(x)), torch.tensor(y)).backward()
    with torch.no_grad():
        expected = torch.cat([(p - 1e-2 * p.grad).reshape(-1) for p in model.parameters()])
    assert_close(path.vectors[-1], expected, rtol=1e-12, atol=1e-15)


def _tile_case(last, targets, rng):
    """Predictions ``(5, 40, ...)`` of five points, their common targets and weights, float64."""
    model = (_classifier() if last is None else nn.Sequential(*_classifier(), last)).double()
    with torch.no_grad():
        predictions = torch.stack([model(torch.as_tensor(rng.normal(size=(40, 4)))) for _ in range(5)])
    y = torch.as_tensor(_targets(targets, rng, 40))
    return predictions, y.double() if y.dtype.is_floating_point else y, torch.as_tensor(rng.uniform(size=40))


@pytest.mark.parametrize(("module", "last", "targets"), MODULE_CASES)
def test_a_tile_s_sums_over_stacked_rows_equal_each_point_s_own(rng, module, last, targets):
    """``tile_sums`` runs a row-wise loss once over the tile's points stacked as samples:
    equal, within float64 rounding, to ``weighted_sum`` point by point; also combined with
    the named losses and split by class."""
    predictions, y, weight = _tile_case(last, targets, rng)
    loss = resolve_loss(module)
    assert loss.rowwise
    cases = [loss]
    if targets == "classes":
        named = [resolve_loss(name) for name in ("cross_entropy", "accuracy")]
        cases += [*named, combine([loss, *named]), by_class(loss), by_class(None)]
    for case in cases:
        expected = torch.stack([case.weighted_sum(p, y, weight) for p in predictions])
        assert_close(case.tile_sums(predictions, y, weight), expected, rtol=1e-12, atol=1e-12)


def test_a_caller_s_callable_is_not_assumed_row_wise_and_runs_per_point(rng):
    """A callable whose value for a sample depends on the whole batch (here: centred on the
    batch's mean) keeps each point's own batch: stacking the points would mix them."""
    loss = resolve_loss(lambda p, t: ((p - p.mean(0)) - t).square().sum(1))
    assert not loss.rowwise and not combine([loss, resolve_loss("mse")]).rowwise
    predictions, y, weight = _tile_case(None, "real", rng)
    expected = torch.stack([loss.weighted_sum(p, y, weight) for p in predictions])
    assert_close(loss.tile_sums(predictions, y, weight), expected, rtol=1e-12)


def test_a_loss_callable_that_vmap_cannot_run_is_blamed_not_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    data = (torch.randn(30, 3), torch.randn(30, 2))

    def scaled_by_its_largest(prediction, target):
        return (prediction - target).abs().mean(1) / float((prediction - target).abs().max())

    with pytest.raises(fs.FastsurfaceError, match=r"`loss` cannot be evaluated under torch\.func\.vmap.*\.item\(\)"):
        fs.loss_surface(model, data, [0.0, 1.0], [0.0], plane=fs.random_plane(model), loss=scaled_by_its_largest)


def test_a_model_returning_one_value_per_sample_flat_is_told_to_return_a_column():
    model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0))
    data = (torch.randn(20, 3), torch.randn(20))  # 1-D targets of a pair: read as (20, 1)
    with pytest.raises(fs.FastsurfaceError, match=r"have the model return \(B, 1\)"):
        fs.loss_surface(model, data, [0.0], [0.0], plane=fs.random_plane(model))
