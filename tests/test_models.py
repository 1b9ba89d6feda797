"""Every registered model: builds from defaults, maps (B, C, H, W) to (B, K), trains a step, is deterministic."""

import pytest
import torch

import models

IMAGE_MODELS = models.list_models("image-classification")


def test_registry_lists_the_image_classifiers():
    assert {"lenet5", "cnn"} <= set(IMAGE_MODELS)
    with pytest.raises(KeyError, match="unknown model"):
        models.create_model("no-such-model")
    with pytest.raises(TypeError, match="unknown config field"):
        models.create_model("cnn", not_a_field=1)


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("batch", [1, 5])
def test_forward_shape(name, batch):
    m = models.create_model(name, num_classes=7).eval()
    assert m(torch.randn(batch, 1, 28, 28)).shape == (batch, 7)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_one_training_step_reduces_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    m = models.create_model(name)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_same_seed_same_weights(name):
    torch.manual_seed(3)
    a = models.create_model(name).state_dict()
    torch.manual_seed(3)
    b = models.create_model(name).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cnn_takes_rgb_of_any_size():
    m = models.create_model("cnn", in_channels=3, num_classes=4, input_size=64).eval()
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 4)
    assert m(torch.randn(2, 3, 37, 53)).shape == (2, 4)


def test_lenet5_is_faithful():
    m = models.create_model("lenet5")
    c3 = m.features[4]
    # Table I of LeCun et al. 1998: 60 of the 96 S2->C3 connections exist
    assert int(c3.mask.sum()) == 60
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [6, 16, 120]
    assert m.classifier[1].out_features == 84
    with pytest.raises(ValueError):
        models.create_model("lenet5", input_size=64)


AUTOENCODERS = models.list_models("autoencoder")


def test_autoencoder_registry_and_variants():
    assert set(AUTOENCODERS) == {"autoencoder", "conv-autoencoder", "denoising-autoencoder", "sparse-autoencoder"}
    assert models.make_config("denoising-autoencoder").noise == "masking"
    assert models.make_config("sparse-autoencoder").sparsity == "l1"
    assert models.make_config("sparse-autoencoder", sparsity="kl").sparsity == "kl"  # CLI beats entry defaults
    assert models.make_config("autoencoder").noise == "none"


@pytest.mark.parametrize("name", AUTOENCODERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_autoencoder_shapes(name, batch):
    m = models.create_model(name).eval()
    x = torch.rand(batch, 1, 28, 28)
    code, recon = m(x)
    assert code.shape == (batch, 30) and recon.shape == x.shape
    assert float(recon.min()) >= 0 and float(recon.max()) <= 1


def test_paper_topology():
    m = models.create_model("autoencoder")
    widths = [layer.out_features for layer in m.encoder if isinstance(layer, torch.nn.Linear)]
    assert widths == [1000, 500, 250, 30]
    widths = [layer.out_features for layer in m.decoder if isinstance(layer, torch.nn.Linear)]
    assert widths == [250, 500, 1000, 784]


def test_an_rbf_network_on_fewer_images_than_centres_reads_new_images():
    """1,000 centres on a folder of 108 images (a training audit): the copies of one image, 0.01 apart, set every
    width to ~0, so no unit answered a new image and the network guessed (a third, on three classes). Widths are
    measured to other images' centres now."""
    from models.mlp import RBFConfig

    g = torch.Generator().manual_seed(0)
    k, n = 3, 36
    base = torch.randn(k, 1, 16, 16, generator=g)
    y, y_new = torch.arange(n) % k, torch.arange(60) % k
    x = base[y] + 0.5 * torch.randn(n, 1, 16, 16, generator=g)
    x_new = base[y_new] + 0.5 * torch.randn(60, 1, 16, 16, generator=g)
    net = models.create_model("rbf", RBFConfig(num_classes=k, input_size=16, centres=1000))
    net.init_from_data(x, y, g)
    with torch.no_grad():
        assert (net(x_new).argmax(1) == y_new).float().mean() > 0.9
