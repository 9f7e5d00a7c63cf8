import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface.analysis.metrics import accuracy, metric_surfaces
from tests.helpers import assert_close


def test_accuracy_beside_the_loss_matches_a_per_point_loop(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = rng.normal(size=(120, 4)), rng.integers(0, 3, size=120)
    plane = fs.entry_plane(model, "0.weight[0, 1]", "2.bias[2]")
    w1, w2 = np.linspace(-3, 3, 4), np.linspace(-3, 3, 5)
    surfaces = metric_surfaces(
        model, (x, y), w1, w2, plane=plane, metrics={"loss": "cross_entropy", "accuracy": accuracy}, dtype="float64"
    )
    expected = np.zeros((len(w1), len(w2)))
    for i, a in enumerate(w1):
        for j, b in enumerate(w2):
            probe = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
            probe.load_state_dict(model.state_dict())
            with torch.no_grad():
                probe[0].weight[0, 1], probe[2].bias[2] = a, b
                expected[i, j] = (probe(torch.tensor(x)).argmax(1) == torch.tensor(y)).double().mean().item()
    assert_close(surfaces["accuracy"].loss, expected, rtol=1e-12)
    assert surfaces["loss"].loss_name == "cross_entropy" and list(surfaces) == ["loss", "accuracy"]


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"metrics": {}}, "`metrics`"), ({"metrics": {"a": "mse"}, "loss": "mse"}, "`loss`")]
)
def test_metric_arguments_are_checked(kwargs, match):
    with pytest.raises(fs.FastsurfaceError, match=match):
        metric_surfaces(fs.ANN(1, 1, 1), (np.zeros(4), np.zeros(4)), [0.0], [0.0], **kwargs)
