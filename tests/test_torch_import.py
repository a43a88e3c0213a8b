"""torchvision-layout weights load into the flax VGG / ResNet and reproduce PyTorch's logits.

torchvision is not a dependency, so the reference networks are plain torch.nn modules with
exactly torchvision's module and parameter names (their `state_dict()` keys are torchvision's),
defined once in benchmarks/torch_reference.py (bench_vs_torch.py times the same ones). They
get random weights and random BatchNorm statistics so every mapped array matters, run in eval mode, and are saved with safetensors (one as .npz); the flax model imports
the file with `load_pretrained` and must give the same logits on the same input. torch is a
test-only dependency (requirements-test.txt); the library never imports it.
"""

from __future__ import annotations

import ast
import hashlib
import pathlib

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only dependency: requirements-test.txt")
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.torch_reference import BasicBlock, Bottleneck, TorchResNet, TorchVGG  # noqa: E402
from helpers import assert_close, zero_variables  # noqa: E402
from prepnet_jax import models  # noqa: E402

torch.set_num_threads(1)


def randomize(net, seed):
  """Random BatchNorm affine parameters and running statistics (torch starts them constant)."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.2)
        module.running_mean.normal_(0, 0.2)
        module.running_var.uniform_(0.5, 1.5)
  return net.eval()


def torch_logits(net, x):
  with torch.no_grad():
    return net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def random_images(shape, seed):
  return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """{key: (torch net, path of its saved state_dict)} for the reference nets."""
  directory = tmp_path_factory.mktemp("torchvision")
  builders = {
      "resnet18": lambda: TorchResNet(BasicBlock, (2, 2, 2, 2), 10),
      "resnet50": lambda: TorchResNet(Bottleneck, (3, 4, 6, 3), 10),
      "vgg16_bn": lambda: TorchVGG(16, True, 10, width=0.25),
      "vgg16": lambda: TorchVGG(16, False, 10, width=0.25),
  }
  result = {}
  for seed, (key, build) in enumerate(builders.items()):
    net = randomize(build(), seed)
    state = {name: tensor.contiguous() for name, tensor in net.state_dict().items()}
    if key == "resnet50":
      path = str(directory / f"{key}.npz")
      np.savez(path, **{name: tensor.numpy() for name, tensor in state.items()})
    else:
      path = str(directory / f"{key}.safetensors")
      save_file(state, path)
    result[key] = (net, path)
  return result


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_logits_match_torch(saved, name):
  net, path = saved[name]  # resnet50 comes from the .npz file
  x = random_images((2, 64, 64, 3), seed=1)
  model = models.get_classifier(name, 10)
  loaded = models.load_pretrained(name, zero_variables(model, x), path)
  assert_close(model.apply(loaded, x, train=False), torch_logits(net, x))


def test_vgg16_bn_logits_match_torch(saved):
  """At 64 px the 2x2 block5 map is pooled up to 7x7, so fc1's C*H*W -> H*W*C order matters."""
  net, path = saved["vgg16_bn"]
  x = random_images((2, 64, 64, 3), seed=2)
  model = models.get_classifier("vgg16_bn", 10, width_multiplier=0.25)
  loaded = models.load_pretrained("vgg16_bn", zero_variables(model, x), path)
  assert_close(model.apply(loaded, x, train=False), torch_logits(net, x))


def test_one_channel_model_equals_torch_on_the_grey_image_replicated(saved):
  net, path = saved["resnet18"]
  grey = random_images((2, 64, 64, 1), seed=3)
  model = models.get_classifier("resnet18", 10)
  loaded = models.load_pretrained("resnet18", zero_variables(model, grey), path)
  assert loaded["params"]["backbone"]["conv1_conv"]["kernel"].shape == (7, 7, 1, 64)
  assert_close(model.apply(loaded, grey, train=False),
               torch_logits(net, np.repeat(grey, 3, axis=-1)))


def test_a_new_head_keeps_its_initial_values(saved):
  net, path = saved["resnet18"]
  x = random_images((1, 64, 64, 3), seed=4)
  model = models.get_classifier("resnet18", 2)  # the file's fc has 10 outputs
  variables = zero_variables(model, x)
  loaded = models.load_pretrained("resnet18", variables, path)
  jax.tree.map(np.testing.assert_array_equal, loaded["params"]["head"],
               variables["params"]["head"])
  feats = model.apply(loaded, x, train=False, method=model.features)
  with torch.no_grad():
    reference = net.features(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  assert_close(feats, reference.transpose(0, 2, 3, 1))


def test_gap_vgg_takes_the_conv_backbone_only(saved):
  _, path = saved["vgg16"]
  x = np.zeros((1, 32, 32, 3), np.float32)
  model = models.get_classifier("vgg16", 10, width_multiplier=0.25, head_type="gap")
  variables = zero_variables(model, x)
  loaded = models.load_pretrained("vgg16", variables, path)
  state = saved["vgg16"][0].state_dict()
  np.testing.assert_array_equal(loaded["params"]["backbone"]["block5_conv3"]["kernel"],
                                state["features.28.weight"].numpy().transpose(2, 3, 1, 0))
  jax.tree.map(np.testing.assert_array_equal, loaded["params"]["head"], variables["params"]["head"])


def test_unet_encoder_takes_the_vgg16_blocks_it_has(saved):
  net, path = saved["vgg16"]
  unet = models.UNetVGG16AE(depth=3, width_multiplier=0.25)
  variables = zero_variables(unet, np.zeros((1, 32, 32, 3), np.float32))
  loaded = models.load_pretrained("unet_vgg16", variables, path)
  encoder, state = loaded["params"]["encoder"], net.state_dict()
  assert sorted(encoder)[-1] == "block3_conv3"
  np.testing.assert_array_equal(encoder["block3_conv2"]["kernel"],
                                state["features.12.weight"].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(encoder["block3_conv2"]["bias"], state["features.12.bias"].numpy())


def test_sha256_is_checked(saved):
  _, path = saved["resnet18"]
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  model = models.get_classifier("resnet18", 10)
  variables = zero_variables(model, np.zeros((1, 32, 32, 3), np.float32))
  models.load_pretrained("resnet18", variables, path, sha256=digest.upper())
  with pytest.raises(ValueError, match=f"SHA-256 mismatch.*got {digest}"):
    models.load_pretrained("resnet18", variables, path, sha256="0" * 64)


def test_pickles_are_refused_with_the_conversion_command(saved, tmp_path):
  net, _ = saved["resnet18"]
  path = tmp_path / "resnet18-f37072fd.pth"
  torch.save(net.state_dict(), path)
  model = models.get_classifier("resnet18", 10)
  variables = zero_variables(model, np.zeros((1, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match=r"never loaded.*torch\.load\('x\.pth', weights_only=True\)"):
    models.load_pretrained("resnet18", variables, path)


def test_a_missing_key_is_named(saved, tmp_path):
  net, _ = saved["resnet18"]
  state = {k: v for k, v in net.state_dict().items() if k != "layer3.1.bn2.running_var"}
  path = str(tmp_path / "broken.safetensors")
  save_file(state, path)
  model = models.get_classifier("resnet18", 10)
  variables = zero_variables(model, np.zeros((1, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match=r"broken\.safetensors.*'layer3\.1\.bn2\.running_var' is not "
                                       r"in the file"):
    models.load_pretrained("resnet18", variables, path)


@pytest.mark.parametrize("file,name,kwargs,convention,message", [
    ("resnet18", "resnet34", {}, "torch",
     r"holds torchvision resnet18 weights.*get_classifier\('resnet18'"),
    ("resnet50", "resnet50", {"layout": "keras"}, "torch",
     r"layout='torchvision' \(the default\)"),
    ("resnet18", "resnet18", {"width_multiplier": 0.5}, "torch",
     r"conv1\.weight.*width_multiplier=1"),
    ("vgg16", "vgg16_bn", {"width_multiplier": 0.25}, "torch", r"holds torchvision vgg16 weights"),
    ("resnet18", "resnet18", {}, "caffe", r"input_convention='torch'"),
])
def test_mismatches_say_what_to_build(saved, file, name, kwargs, convention, message):
  model = models.get_classifier(name, 10, **kwargs)
  variables = zero_variables(model, np.zeros((1, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match=message):
    models.load_pretrained(name, variables, saved[file][1], input_convention=convention)


def test_the_library_never_imports_torch():
  package = pathlib.Path(models.__file__).resolve().parent.parent
  importers = []
  for path in package.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      if any("torch" in name.split(".") for name in names):  # torch, safetensors.torch
        importers.append(str(path.relative_to(package)))
  assert not importers, f"the library imports torch (a test-only dependency): {importers}"
