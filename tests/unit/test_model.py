import torch

import fastsurface as fs


def test_ann_has_the_article_module_names():
    model = fs.ANN(1, 3, 2)
    assert list(model.net._modules) == ["Layer_1", "Tanh", "Layer_2"]
    assert model.net.Layer_1.bias is None and model.net.Layer_2.bias is None
    assert tuple(model.net.Layer_1.weight.shape) == (3, 1) and tuple(model.net.Layer_2.weight.shape) == (2, 3)


def test_seed_ann_predicts_w2_tanh_w1_x():
    model = fs.ANN(1, 1, 1)
    with torch.no_grad():
        model.net.Layer_1.weight.fill_(0.7)
        model.net.Layer_2.weight.fill_(-1.3)
        x = torch.linspace(-3, 3, 11).reshape(-1, 1)
        assert torch.allclose(model(x), -1.3 * torch.tanh(0.7 * x))
