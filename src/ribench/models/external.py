"""Outside backbones: a user's own ``nn.Module``, timm models, Hugging Face image classifiers.

Any of them becomes a ribench ``Model`` (``ExternalModel``) so that every method and
evaluation works on it unchanged: images go through ``Model.preprocess`` (batched, on the
device, per the backbone's ``InputSpec``), ``features(x)`` returns the output of the named
feature layer ``[B, D]``, and ``head`` is the module's own ``nn.Linear(D, classes)``, taken
out of the module (its slot becomes ``nn.Identity``) so that a method replacing or
refitting ``model.head`` changes the classifier the model actually uses.

Sources (the ``source`` of a backbone table in a spec, see docs/backbones.md):

- ``module:pkg.mod:factory``  a function returning an ``nn.Module`` (or an ``nn.Module``
  subclass); weights from a ``.safetensors`` file or a ``.pt``/``.pth``/``.bin`` file read with
  ``torch.load(weights_only=True)`` (a full pickle only with ``trust_checkpoint``, the CLI's
  ``--trust-checkpoint``; ``models/state_io.py`` semantics). Importing ``pkg.mod`` and calling
  the factory run that code: a spec naming a module source must be trusted like a script.
  ``import_factory`` refuses callables that are no model factories (the standard library's,
  builtins', torch's own functions: ``module:os:system``) unless trust is given.
- ``hf:<folder or hub id>``    a ``transformers`` image classifier, loaded with
  ``AutoModelForImageClassification.from_pretrained(..., local_files_only=True)`` (no
  network unless the table says ``download = true``). Optional extra ``ribench[hf]``.
- ``timm:<model name>``        ``timm.create_model``; weights from a local file, or from
  timm's own hub cache with ``download = true``. Optional extra ``ribench[timm]``.
- ``preset = "<name>"``        a named source from ``presets.toml``: the ViT-B/16 models of
  ImageNet-RIB (Hwang et al., arXiv:2410.21582).

The feature layer is, by default, whatever enters the head. It may instead name a
submodule (its output, flattened to ``[B, D]``) or a method of the module (called on the
preprocessed batch). A submodule's output is caught with a forward hook registered for
the call only, and the rest of the forward pass is skipped by raising a private
exception from the hook: nothing after the feature layer is computed, and no hook stays
on the module (so ``copy.deepcopy`` of an adapted model carries none).

Models saved with ``save_model`` record ``arch = "external"`` and, in ``hparams``, how to
rebuild the architecture without its weights (the factory, the Hugging Face config as a
dict, the timm name); ``checkpoint.load_model`` calls ``rebuild`` and then loads the
saved state dict. timm and transformers are imported lazily, only for their sources.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import re
import sys
import tomllib
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..core.errors import CheckpointError, ConfigError, UnknownNameError
from ..core.types import InputSpec
from .base import Model
from .state_io import load_into, load_state_dict

ARCH = "external"
VERSION = "1"  # code version of outside-backbone loading, part of the pretrain cell key
KINDS = ("module", "hf", "timm")
HEAD_CANDIDATES = ("head", "fc", "classifier")
ENTRY_FIELDS = ("name", "preset", "source", "weights", "feature_layer", "head", "input", "kwargs", "recipe",
                "reset_head", "download", "version")


# ----------------------------------------------------------------------- presets


@lru_cache(maxsize=1)
def presets() -> dict[str, dict[str, Any]]:
    """Named outside backbones (``presets.toml``): name -> table with ``source``, ``input``..."""
    text = resources.files("ribench.models").joinpath("presets.toml").read_text()
    return tomllib.loads(text)


def list_presets() -> list[str]:
    return sorted(presets())


# ------------------------------------------------------------------ spec entries


@dataclass(frozen=True)
class BackboneEntry:
    """One outside backbone of a spec (a table in ``backbones``), validated.

    ``where`` is the spec path used in error messages (``backbones[2]``).
    """

    name: str
    source: str
    weights: str | None = None
    feature_layer: str | None = None
    head: str | None = None
    input: InputSpec | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    reset_head: bool = False
    download: bool = False
    version: str = "1"
    preset: str | None = None
    where: str = "backbones"

    @property
    def kind(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def target(self) -> str:
        return self.source.split(":", 1)[1]

    def as_dict(self) -> dict[str, Any]:
        """The normalised table (what the spec stores; parses back to the same entry)."""
        out: dict[str, Any] = {"name": self.name, "source": self.source}
        if self.preset:
            out["preset"] = self.preset
        for k in ("weights", "feature_layer", "head"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.input is not None:
            out["input"] = dataclasses.asdict(self.input)
        if self.kwargs:
            out["kwargs"] = dict(self.kwargs)
        out.update(recipe="given", reset_head=self.reset_head, download=self.download, version=self.version)
        return out


def _input_spec(value: Any, where: str) -> InputSpec:
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"must be a table {{size, channels, mean, std}}, got {value!r}")
    unknown = sorted(set(value) - {"size", "channels", "mean", "std"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown field; valid: size, channels, mean, std")
    try:
        channels = int(value.get("channels", 3))
        size = int(value["size"])
        mean = tuple(float(v) for v in value.get("mean", (0.5,) * channels))
        std = tuple(float(v) for v in value.get("std", (0.5,) * channels))
    except KeyError:
        raise ConfigError(f"{where}.size", "is required (square input side in pixels)") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(where, f"size and channels must be integers, mean and std lists of numbers ({e})") from None
    if size < 1 or channels not in (1, 3):
        raise ConfigError(where, f"size must be positive and channels 1 or 3, got size={size}, channels={channels}")
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(where, f"mean and std need {channels} values each, got {list(mean)} and {list(std)}")
    if any(s <= 0 for s in std):
        raise ConfigError(f"{where}.std", f"must be positive, got {list(std)}")
    return InputSpec(channels=channels, size=size, mean=mean, std=std)


def _resolve_path(path: str, base_dir: str | os.PathLike | None) -> str:
    """``path`` made absolute (relative to ``base_dir``, else to the working directory), so that
    a stored spec names the same file from any working directory."""
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir).expanduser() / p
    return os.path.abspath(p)


def _is_folder_ref(target: str) -> bool:
    return target.startswith(("/", "./", "../", "~")) or os.path.isdir(os.path.expanduser(target))


def parse_entry(value: Any, where: str = "backbones", base_dir: str | os.PathLike | None = None) -> BackboneEntry:
    """Validate a backbone table (or a preset name) into a ``BackboneEntry``.

    Relative ``weights`` paths and ``hf:`` folders are taken relative to ``base_dir``
    (the spec file's folder) when given, else to the working directory, and stored absolute. Errors are ConfigErrors naming the field.
    """
    if isinstance(value, str):
        if value not in presets():
            raise UnknownNameError("backbone preset", value, list_presets())
        value = {"preset": value}
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"must be a registered model name or a table, got {type(value).__name__}")
    unknown = sorted(set(value) - set(ENTRY_FIELDS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown field; valid: {', '.join(ENTRY_FIELDS)}")
    data = dict(value)
    preset = data.get("preset")
    if preset is not None:
        if preset not in presets():
            raise ConfigError(f"{where}.preset", str(UnknownNameError("backbone preset", str(preset), list_presets())))
        base = {k: v for k, v in presets()[preset].items() if k in ENTRY_FIELDS}
        if "source" in data and data["source"] != base["source"]:
            raise ConfigError(f"{where}.source", f"give either a preset or a source, not both (preset {preset!r} "
                                                 f"is {base['source']!r})")
        data = {**base, **data, "name": data.get("name", preset)}
    source = data.get("source")
    if not isinstance(source, str) or ":" not in source or source.split(":", 1)[0] not in KINDS or \
            not source.split(":", 1)[1]:
        raise ConfigError(f"{where}.source", "must be 'module:pkg.mod:factory', 'hf:<folder or hub id>' or "
                                             f"'timm:<model name>' (or give a preset), got {source!r}")
    kind, target = source.split(":", 1)
    if kind == "module" and (target.count(":") != 1 or not all(target.split(":"))):
        raise ConfigError(f"{where}.source", f"a module source is 'module:package.module:function', got {source!r}")
    if kind == "hf" and _is_folder_ref(target):
        source = "hf:" + _resolve_path(target, base_dir)
    recipe = data.get("recipe", "given")
    if recipe != "given":
        raise ConfigError(f"{where}.recipe", f"outside backbones come pretrained: the only recipe is 'given', got "
                                             f"{recipe!r} (the spec's `recipes` apply to registered backbones)")
    for flag in ("reset_head", "download"):
        if not isinstance(data.get(flag, False), bool):
            raise ConfigError(f"{where}.{flag}", f"must be true or false, got {data[flag]!r}")
    for text in ("weights", "feature_layer", "head", "name", "version"):
        if data.get(text) is not None and not isinstance(data[text], str):
            raise ConfigError(f"{where}.{text}", f"must be a string, got {data[text]!r}")
    kwargs = data.get("kwargs", {})
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}.kwargs", f"must be a table of keyword arguments, got {kwargs!r}")
    weights = data.get("weights")
    if weights is not None:
        weights = _resolve_path(weights, base_dir)
        if kind == "hf":
            raise ConfigError(f"{where}.weights", "a Hugging Face model loads its weights from its folder; "
                                                  "drop `weights` or use a module/timm source")
    if kind == "timm" and weights is None and not data.get("download", False):
        raise ConfigError(f"{where}.weights", "a timm backbone needs a local `weights` file, or `download = true` "
                                              "to let timm fetch its pretrained weights (network)")
    name = data.get("name") or _default_name(kind, target)
    return BackboneEntry(
        name=name, source=source, weights=weights, feature_layer=data.get("feature_layer"), head=data.get("head"),
        input=None if data.get("input") is None else _input_spec(data["input"], f"{where}.input"),
        kwargs=dict(kwargs), reset_head=data.get("reset_head", False), download=data.get("download", False),
        version=str(data.get("version", "1")), preset=preset, where=where,
    )


def _default_name(kind: str, target: str) -> str:
    if kind == "module":
        return target.rsplit(":", 1)[1]
    return Path(target).name if kind == "hf" else target


# ---------------------------------------------------------------- content hashes


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=64)
def _cached_sha(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def _sha_of(path: str, what: str) -> str:
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return _cached_sha(str(p.resolve()), st.st_size, st.st_mtime_ns)
    if p.is_dir():  # every file of a folder, by relative path
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
            h.update(f"{f.relative_to(p).as_posix()}\0{_sha_of(str(f), what)}\0".encode())
        return h.hexdigest()
    raise CheckpointError(f"{what} {path} does not exist")


def identity(entry: BackboneEntry) -> dict[str, Any]:
    """What identifies an outside backbone's pretrained model in a cell key.

    The source, feature layer, head, input spec, kwargs, ``reset_head`` (``"always"`` when
    set, so that runs planned when it only replaced a head of another class count are not
    reused) and the entry's ``version``; the SHA-256 of the weights file (or of every file of a Hugging Face
    folder) instead of its path, so that a changed file changes the key and a moved one
    does not. Raises CheckpointError when the file or folder is missing.
    """
    out = entry.as_dict()
    for k in ("name", "preset", "download", "recipe"):
        out.pop(k, None)
    out["code_version"] = VERSION
    if entry.reset_head:  # the head is replaced even when its class count fits (before: only when it did not)
        out["reset_head"] = "always"
    if entry.weights is not None:
        out["weights"] = _sha_of(entry.weights, "weights file")
    if entry.kind == "hf" and _is_folder_ref(entry.target):
        out["source"] = "hf-folder"
        out["folder_sha256"] = _sha_of(entry.target, "Hugging Face model folder")
    return out


# ------------------------------------------------------------------------ model


class _Stop(Exception):
    """Raised by the feature hook to skip the rest of the module's forward pass."""


def _submodule(net: nn.Module, path: str) -> nn.Module | None:
    try:
        return net.get_submodule(path)
    except AttributeError:
        return None


def _set_submodule(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, module)


class ExternalModel(Model):
    """A foreign ``nn.Module`` as a ribench Model (see module docstring).

    ``net``: the module with its head slot replaced by ``nn.Identity``; ``head``: its
    ``nn.Linear``. ``head_path``: where the head sat; ``feature_layer``: a submodule path
    or method name of ``net`` (None: the input of the head). ``call``: how the module is
    called on a preprocessed batch ``z`` (``"positional"``: ``net(z)``; ``"pixel_values"``:
    ``net(pixel_values=z)``, as Hugging Face models are).
    """

    def __init__(self, net: nn.Module, head: nn.Linear, spec: InputSpec, head_path: str,
                 feature_layer: str | None = None, call: str = "positional"):
        super().__init__(spec, head.in_features, head.out_features)
        self.net = net
        self.head = head
        self.head_path = head_path
        self.feature_layer = feature_layer
        self.call = call

    def _call(self, z: torch.Tensor) -> Any:
        return self.net(pixel_values=z) if self.call == "pixel_values" else self.net(z)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        layer = self.feature_layer
        if layer is not None and not isinstance(_submodule(self.net, layer), nn.Module):
            out = getattr(self.net, layer)(z)  # a method such as forward_features
        else:
            target = self.net.get_submodule(layer if layer is not None else self.head_path)
            caught: list[torch.Tensor] = []

            def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
                caught.append(output)
                raise _Stop

            handle = target.register_forward_hook(hook)
            try:
                self._call(z)
            except _Stop:
                pass
            finally:
                handle.remove()
            if not caught:
                raise ConfigError("feature_layer", f"layer {layer or self.head_path!r} was not called in the forward "
                                                   "pass of the module")
            out = caught[0]
        if not isinstance(out, torch.Tensor):
            raise ConfigError("feature_layer", f"{layer or 'the head input'} returned a {type(out).__name__}, "
                                               "expected a tensor [B, D]")
        return out.flatten(1) if out.dim() > 2 else out


def _find_head(net: nn.Module, head: str | None, where: str) -> tuple[str, nn.Linear]:
    linear = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if head is None:
        found = [n for n in HEAD_CANDIDATES if isinstance(_submodule(net, n), nn.Linear)]
        if not found:
            raise ConfigError(f"{where}.head", f"name the module's classifier (an nn.Linear submodule); none of "
                                               f"{list(HEAD_CANDIDATES)} is one. Linear submodules: {linear[:20]}")
        head = found[0]
    module = _submodule(net, head)
    if not isinstance(module, nn.Linear):
        what = "no such submodule" if module is None else f"a {type(module).__name__}"
        raise ConfigError(f"{where}.head", f"{head!r} is {what}, expected an nn.Linear. Linear submodules: {linear[:20]}")
    return head, module


def wrap_module(net: nn.Module, spec: InputSpec, head: str | None = None, feature_layer: str | None = None,
                call: str = "positional", rebuild_info: Mapping[str, Any] | None = None,
                where: str = "backbone") -> ExternalModel:
    """Wrap ``net`` (modified in place: its head slot becomes ``nn.Identity``) as a Model.

    ``head``: dotted path of its ``nn.Linear`` classifier (default: the first of head, fc,
    classifier). ``feature_layer``: a submodule path or method name whose output is the
    feature vector (default: the head's input). ``rebuild_info``: how ``rebuild`` remakes
    the architecture from a saved checkpoint (recorded as ``hparams``).
    A dry run on one zero image checks that the features fit the head.
    """
    head_path, linear = _find_head(net, head, where)
    if feature_layer is not None and _submodule(net, feature_layer) is None and \
            not callable(getattr(net, feature_layer, None)):
        raise ConfigError(f"{where}.feature_layer", f"{feature_layer!r} is neither a submodule nor a method of "
                                                    f"{type(net).__name__}")
    _set_submodule(net, head_path, nn.Identity())
    model = ExternalModel(net, linear, spec, head_path, feature_layer, call)
    model.arch = ARCH
    model.hparams = {**dict(rebuild_info or {}), "head": head_path, "feature_layer": feature_layer, "call": call}
    device = linear.weight.device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            dim = model.embed(torch.zeros(1, spec.channels, spec.size, spec.size, device=device)).shape
    except ConfigError as e:
        raise ConfigError(f"{where}.feature_layer", str(e).split(": ", 1)[-1]) from None
    except Exception as e:  # the module rejects the input spec: say so, not a deep traceback
        raise ConfigError(f"{where}.input", f"{type(net).__name__} fails on a [1, {spec.channels}, {spec.size}, "
                                            f"{spec.size}] input: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                          ) from None
    finally:
        model.train(was_training)
    if dim[-1] != linear.in_features or len(dim) != 2:
        raise ConfigError(f"{where}.feature_layer", f"{feature_layer or 'the head input'} gives features of shape "
                                                    f"{list(dim)}, but head {head_path!r} takes {linear.in_features}")
    return model


def replace_head(model: ExternalModel, num_classes: int) -> ExternalModel:
    """Give ``model`` a freshly initialised ``nn.Linear(D, num_classes)`` head (global RNG)."""
    model.head = nn.Linear(model.num_features, num_classes).to(model.head.weight.device)
    model.num_classes = num_classes
    return model


# ---------------------------------------------------------------- sources


def _require(package: str, extra: str):
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ConfigError("backbones", f"this backbone needs {package!r}, which is not importable ({e}). "
                                       f"Install the extra: pip install 'ribench[{extra}]'") from None


# Packages whose callables are never model factories even outside the standard library
# (their functions read files, and some run the code those files hold).
NOT_FACTORIES = ("numpy", "dill", "cloudpickle", "joblib", "yaml", "pandas")


def _refused_origin(module: str) -> str | None:
    """Why callables of ``module`` are refused as factories without trust (None: not refused)."""
    root = module.split(".", 1)[0]
    if root in sys.stdlib_module_names or root == "builtins":
        return f"module {module!r} is part of Python's standard library"
    if root in NOT_FACTORIES:
        return f"module {module!r} ({root}) holds no model factories"
    return None


def import_factory(target: str, where: str, trust: bool = False) -> Callable[..., nn.Module]:
    """The callable of a ``module:pkg.mod:factory`` source (``target`` is ``pkg.mod:factory``).

    Importing ``pkg.mod`` runs its code: a spec (or a checkpoint) naming a module source
    must be trusted like a script. Without ``trust`` the callable must be a Python
    function or an ``nn.Module`` subclass, and neither it nor the module may come from
    the standard library, builtins, ``NOT_FACTORIES`` or (for functions) torch itself,
    whose callables run commands or load files (``os:system``, ``torch:load``); with
    ``trust`` any callable is returned. Errors are ConfigErrors at ``<where>.source``.
    """
    mod_name, _, fn_name = target.partition(":")
    field = f"{where}.source"
    hint = ("; a `module:` source names your own model factory. If you really mean it, pass --trust-checkpoint "
            "(trust_checkpoint = true in the spec)")
    why = None if trust else _refused_origin(mod_name)
    if why:
        raise ConfigError(field, f"{target!r} is not a model factory: {why}, whose callables can run commands or "
                                 f"read files{hint}")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(field, f"cannot import module {mod_name!r}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ConfigError(field, f"module {mod_name!r} has no function {fn_name!r}")
    if trust:
        return fn
    module_class = inspect.isclass(fn) and issubclass(fn, nn.Module)
    if not (module_class or inspect.isfunction(fn)):
        raise ConfigError(field, f"{target!r} is a {type(fn).__name__}, not a model factory: it must be a Python "
                                 f"function returning an nn.Module, or an nn.Module subclass{hint}")
    origin = getattr(fn, "__module__", None) or mod_name
    why = _refused_origin(origin)
    if why is None and not module_class and origin.split(".", 1)[0] == "torch":
        why = f"function {origin}.{fn_name} is torch's own, not a model factory (torch's loaders run files' code)"
    if why:
        raise ConfigError(field, f"{target!r} is not a model factory: it is defined in {origin!r} ({why}){hint}")
    return fn


def _module_net(target: str, kwargs: Mapping[str, Any], where: str, trust: bool = False) -> nn.Module:
    net = import_factory(target, where, trust)(**kwargs)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"{where}.source", f"{target} returned a {type(net).__name__}, expected an nn.Module")
    return net


def _hf_net(target: str, download: bool, kwargs: Mapping[str, Any], where: str) -> nn.Module:
    transformers = _require("transformers", "hf")
    folder = _hf_folder(target, download)
    try:
        net = transformers.AutoModelForImageClassification.from_pretrained(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot load a Hugging Face image classifier from {folder}: "
                              f"{str(e).splitlines()[0][:300]}") from None
    return net.float()


def _hf_folder(target: str, download: bool) -> str:
    """A local folder for a folder path or a hub id (the hub cache's snapshot; fetched only
    with ``download``). Looking in the cache first avoids any network round trip."""
    if _is_folder_ref(target):
        if not Path(target).is_dir():
            raise CheckpointError(f"Hugging Face model folder {target} does not exist")
        return target
    _require("transformers", "hf")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(target, local_files_only=not download,
                                 allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"])
    except Exception as e:  # not cached, unknown repository, no network
        hint = "" if download else " (not in the local Hugging Face cache; download = true fetches it)"
        raise CheckpointError(f"cannot load Hugging Face hub id {target!r}{hint}: "
                              f"{str(e).splitlines()[0][:200]}") from None


def _hf_input_spec(target: str, net: nn.Module, download: bool, where: str) -> InputSpec:
    """The input spec from the model's ``preprocessor_config.json`` (size, mean, std)."""
    p = Path(_hf_folder(target, download)) / "preprocessor_config.json"
    path = str(p) if p.is_file() else None
    if path is None:
        raise ConfigError(f"{where}.input", f"{target} has no preprocessor_config.json; give the input spec: "
                                            "input = {size = ..., channels = ..., mean = [...], std = [...]}")
    cfg = json.loads(Path(path).read_text())
    size = cfg.get("crop_size") or cfg.get("size") or getattr(net.config, "image_size", None)
    if isinstance(size, Mapping):
        size = size.get("height") or size.get("shortest_edge")
    channels = int(getattr(net.config, "num_channels", 3))
    mean = cfg.get("image_mean", [0.5] * channels) if cfg.get("do_normalize", True) else [0.0] * channels
    std = cfg.get("image_std", [0.5] * channels) if cfg.get("do_normalize", True) else [1.0] * channels
    return _input_spec({"size": size, "channels": channels, "mean": mean, "std": std}, f"{where}.input")


def _hf_head_name(net: nn.Module, head: str | None) -> str | None:
    if head is not None:
        return head
    return "classifier" if isinstance(_submodule(net, "classifier"), nn.Linear) else None


def _timm_net(target: str, pretrained: bool, kwargs: Mapping[str, Any], where: str) -> nn.Module:
    timm = _require("timm", "timm")
    try:
        return timm.create_model(target, pretrained=pretrained, **kwargs)
    except RuntimeError as e:  # timm's "Unknown model"
        raise ConfigError(f"{where}.source", f"timm cannot create {target!r}: {str(e).splitlines()[0][:300]}") from None


def _timm_input_spec(net: nn.Module, where: str) -> InputSpec:
    cfg = getattr(net, "pretrained_cfg", None) or {}
    _, h, _ = cfg.get("input_size", (3, 224, 224))
    return _input_spec({"size": h, "channels": cfg.get("input_size", (3,))[0], "mean": cfg.get("mean", (0.5,) * 3),
                        "std": cfg.get("std", (0.5,) * 3)}, f"{where}.input")


def _load_weights(net: nn.Module, path: str, trust_checkpoint: bool) -> None:
    state_dict, _ = load_state_dict(path, trust_checkpoint)
    load_into(net, state_dict, path)


def build(entry: BackboneEntry, num_classes: int | None = None, trust_checkpoint: bool = False,
          class_names: Sequence[str] | None = None) -> ExternalModel:
    """The pretrained model m0 of an outside backbone, on CPU, in eval mode.

    ``num_classes``: the suite's classes (default: ``len(class_names)``). ``reset_head =
    true`` always gives the model a fresh head of that many classes (from the global RNG,
    which the engine seeds from ``[pretrain] seed``). Without it the module's head is kept:
    a head with another class count is a ConfigError, and a head whose label names (a
    Hugging Face config's ``id2label``, a timm ``pretrained_cfg``'s ``label_names``) are not
    ``class_names`` in order gets a ``HeadLabelWarning``. Weight problems are
    CheckpointErrors naming the file.
    """
    where, kind, target = entry.where, entry.kind, entry.target
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if kind == "module":
        net = _module_net(target, entry.kwargs, where, trust_checkpoint)
        if entry.weights is not None:
            _load_weights(net, entry.weights, trust_checkpoint)
        if entry.input is None:
            raise ConfigError(f"{where}.input", "a module backbone needs its input spec: "
                                                "input = {size = ..., channels = ..., mean = [...], std = [...]}")
        spec, head, call = entry.input, entry.head, "positional"
        info: dict[str, Any] = {"source": entry.source, "kwargs": entry.kwargs}
    elif kind == "hf":
        net = _hf_net(target, entry.download, entry.kwargs, where)
        spec = entry.input or _hf_input_spec(target, net, entry.download, where)
        head, call = _hf_head_name(net, entry.head), "pixel_values"
        info = {"source": "hf", "hf_config": net.config.to_dict()}
    else:
        net = _timm_net(target, entry.weights is None, entry.kwargs, where)
        if entry.weights is not None:
            _load_weights(net, entry.weights, trust_checkpoint)
        spec = entry.input or _timm_input_spec(net, where)
        head = entry.head or (getattr(net, "pretrained_cfg", None) or {}).get("classifier")
        call = "positional"
        info = {"source": entry.source, "kwargs": entry.kwargs}
    labels = label_names(net)
    model = wrap_module(net.cpu(), spec, head, entry.feature_layer, call, info, where)
    if entry.reset_head:
        replace_head(model, num_classes if num_classes is not None else model.num_classes)
    elif num_classes is not None and model.num_classes != num_classes:
        raise ConfigError(f"{where}.reset_head", f"the head of {entry.name!r} has {model.num_classes} classes but "
                                                 f"the suite's pretraining domain has {num_classes}; set reset_head = true to "
                                                 "replace it, or, for a model pretrained on other classes, declare "
                                                 "them as the pretraining domain's own classes (docs/datasets.md)")
    elif class_names is not None and labels is not None:
        problem = head_label_mismatch(labels, class_names)
        if problem:
            warnings.warn(f"{where}: the kept head of {entry.name!r} {problem}; its logits do not score the "
                          "suite's classes. Set reset_head = true to train a fresh head", HeadLabelWarning,
                          stacklevel=2)
    return model.eval()


class HeadLabelWarning(UserWarning):
    """A kept head was trained on other classes than the suite's (``build``)."""


_PLACEHOLDER_LABEL = re.compile(r"LABEL_\d+")  # transformers' id2label when the config names no classes


def label_names(net: nn.Module) -> list[str] | None:
    """The class names of ``net``'s head, in logit order, when the module carries them: a
    Hugging Face config's ``id2label`` (unless it holds only the ``LABEL_<i>`` placeholders) or
    a timm ``pretrained_cfg``'s ``label_names``. None when the module says nothing."""
    id2label = getattr(getattr(net, "config", None), "id2label", None)
    if isinstance(id2label, Mapping) and id2label:
        try:
            names = [str(id2label[k]) for k in sorted(id2label, key=int)]
        except (TypeError, ValueError):
            names = None
        if names and not all(_PLACEHOLDER_LABEL.fullmatch(n) for n in names):
            return names
    cfg = getattr(net, "pretrained_cfg", None)
    names = cfg.get("label_names") if isinstance(cfg, Mapping) else None
    if names and not isinstance(names, str):
        return [str(n) for n in names]
    return None


def _label_key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def head_label_mismatch(model_labels: Sequence[str], class_names: Sequence[str]) -> str | None:
    """Why a head whose logits are named ``model_labels`` does not score ``class_names`` (the
    suite's classes, in order), or None when they agree. Names compare case-blind, with
    ``_`` as a space."""
    have = [_label_key(n) for n in model_labels]
    want = [_label_key(n) for n in class_names]
    if have == want:
        return None
    missing = [n for n, k in zip(class_names, want) if k not in set(have)]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        return (f"was trained on labels {list(model_labels[:5])}{'...' if len(model_labels) > 5 else ''}, "
                f"which do not include the suite's classes {shown}")
    return "names the suite's classes in another order than the suite"


def rebuild(hparams: Mapping[str, Any], num_classes: int, spec: InputSpec, path_for_messages: str = "",
            trust_checkpoint: bool = False) -> ExternalModel:
    """The architecture of a saved outside backbone (random weights), for ``load_model``.

    A ``module:`` source is imported and called as in a spec (``import_factory``, with
    ``trust_checkpoint`` as its trust)."""
    source = hparams.get("source", "")
    head, layer, call = hparams.get("head"), hparams.get("feature_layer"), hparams.get("call", "positional")
    where = f"checkpoint {path_for_messages}"
    if source.startswith("module:"):
        net = _module_net(source.split(":", 1)[1], hparams.get("kwargs", {}), where, trust_checkpoint)
    elif source == "hf":
        transformers = _require("transformers", "hf")
        cfg = dict(hparams["hf_config"])
        config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        net = transformers.AutoModelForImageClassification.from_config(config).float()
    elif source.startswith("timm:"):
        net = _timm_net(source.split(":", 1)[1], False, hparams.get("kwargs", {}), where)
    else:
        raise CheckpointError(f"checkpoint {path_for_messages} records an outside backbone without a source "
                              "(a module wrapped in Python without rebuild_info cannot be rebuilt from a file)")
    model = wrap_module(net, spec, head, layer, call, hparams, where)
    if model.num_classes != num_classes:
        replace_head(model, num_classes)
    return model
