"""Loading OpenCLIP models: config JSONs, local checkpoints (safetensors, weights-only .pt), local-dir."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch

from clipaudit.errors import ModelError, SettingsError
from clipaudit.models import ModelSpec, load_model, resolve_device, resolve_precision
from tests.tiny_clip import (
    hub_snapshot,
    tiny_state_dict,
    write_tiny_checkpoint,
    write_tiny_config,
    write_tiny_local_dir,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return {
        "config": write_tiny_config(folder),
        "safetensors": write_tiny_checkpoint(folder / "seed3.safetensors", seed=3),
        "pt": write_tiny_checkpoint(folder / "seed3.pt", seed=3),
        "folder": folder,
    }


def assert_weights_equal(model: torch.nn.Module, expected: dict) -> None:
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name


def test_safetensors_and_weights_only_pt_checkpoints_load_the_written_weights(tiny):
    expected = tiny_state_dict(seed=3)
    for kind in ("safetensors", "pt"):
        loaded = load_model(ModelSpec(str(tiny["config"]), str(tiny[kind])), device="cpu")
        assert_weights_equal(loaded.model, expected)
        assert (
            loaded.info["checkpoint_sha256"] == hashlib.sha256(tiny[kind].read_bytes()).hexdigest()
        )
        assert loaded.label == "tiny-clip@seed3"
        assert loaded.image_size == 32 and loaded.precision == "fp32"
        assert not loaded.model.training


def test_a_pickled_object_in_a_checkpoint_is_refused_not_run(tiny, tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_state_dict(seed=3), "extra": Payload()}, bad)
    with pytest.raises(
        ModelError, match=r"could not load model 'tiny-clip@evil'.*holds only tensors"
    ):
        load_model(ModelSpec(str(tiny["config"]), str(bad)), device="cpu")
    assert not marker.exists()


def write_type_error_pickle(path: Path, marker: Path) -> Path:
    """A checkpoint on which torch's safe loader raises a TypeError (a tensor "built" from a
    state that is no tensor's), followed by an object that opens ``marker`` when unpickled in
    full: what open_clip does after a TypeError, before torch 2.6 or with
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set."""
    from collections import OrderedDict

    class Tensor:
        def __reduce__(self):
            args = (torch.zeros(0).untyped_storage(), 0, (0,), (1,), False, OrderedDict())
            return (torch._utils._rebuild_tensor_v2, args, (False, None, OrderedDict()))

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save([Tensor(), Payload()], path)
    with pytest.raises(TypeError):  # the safe loader's error: not an UnpicklingError
        torch.load(path, weights_only=True)
    return path


def test_a_checkpoint_the_safe_loader_fails_on_is_never_unpickled_in_full(
    tiny, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch < 2.6 behaves so
    marker = tmp_path / "executed"
    evil = write_type_error_pickle(tmp_path / "evil.pt", marker)
    with pytest.raises(
        ModelError, match=r"could not load model 'tiny-clip@evil': checkpoint .*evil.pt' cannot "
    ):
        load_model(ModelSpec(str(tiny["config"]), str(evil)), device="cpu")
    assert not marker.exists()
    # a local-dir (or hub) model's weights are read by open_clip alone
    folder = tmp_path / "evil-dir"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": json.loads(tiny["config"].read_text()), "preprocess_cfg": {}})
    )
    write_type_error_pickle(folder / "open_clip_pytorch_model.bin", marker)
    with pytest.raises(
        ModelError,
        match=r"could not load model 'local-dir:.*evil-dir': checkpoint .*open_clip_pytorch_model"
        r"\.bin' cannot be read as tensors alone, unpickling nothing else \(TypeError",
    ):
        load_model(ModelSpec(f"local-dir:{folder}"), device="cpu")
    assert not marker.exists()
    import os

    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # the caller's setting, back
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_a_checkpoint_that_is_no_state_dict_or_of_another_model_says_so(tiny, tmp_path):
    config = str(tiny["config"])
    torch.save([1, 2], tmp_path / "numbers.pt")
    torch.save({}, tmp_path / "nothing.pt")
    torch.save({"epoch": 3, "step": 10}, tmp_path / "counters.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    expected = {
        "numbers": r"holds a list, not a state dict",
        "nothing": r"holds an empty dict, not a state dict",
        "counters": r"holds a dict of 2 entries, e.g. 'epoch', 'step', not a state dict",
        "notes": r"cannot be read as tensors alone",
    }
    for name, message in expected.items():
        with pytest.raises(ModelError, match=rf"'tiny-clip@{name}': checkpoint .*{message}"):
            load_model(ModelSpec(config, str(tmp_path / f"{name}.pt")), device="cpu")
    # a safetensors file cut short (a download stopped) is damaged, not of the wrong kind
    from safetensors.torch import save_file

    save_file(tiny_state_dict(seed=1), tmp_path / "cut.safetensors")
    whole = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        ModelError,
        match=r"cut.safetensors' is no readable safetensors file \(.*\): it is damaged or cut short; download or save it again$",
    ):
        load_model(ModelSpec(config, str(tmp_path / "cut.safetensors")), device="cpu")
    # open_clip reads a file as safetensors by its lower-case suffix alone, and "MODEL.SAFETENSORS"
    # with torch's pickle reader, which cannot: the fix is the name, not the file
    save_file(tiny_state_dict(seed=1), tmp_path / "upper.SAFETENSORS")
    with pytest.raises(
        ModelError,
        match=r"upper.SAFETENSORS' is named with '.SAFETENSORS'; open_clip reads a safetensors "
        r"file only by the lower-case suffix: rename it to '.*upper.safetensors'$",
    ):
        load_model(ModelSpec(config, str(tmp_path / "upper.SAFETENSORS")), device="cpu")
    # a state dict of another open_clip architecture, in a training checkpoint's wrapper
    import open_clip

    other = open_clip.CLIP(**{**json.loads(tiny["config"].read_text()), "embed_dim": 16})
    torch.save({"state_dict": other.state_dict(), "epoch": 1}, tmp_path / "other.pt")
    with pytest.raises(
        ModelError, match=r"checkpoint .*other.pt' does not fit the architecture 'tiny-clip'"
    ):
        load_model(ModelSpec(config, str(tmp_path / "other.pt")), device="cpu")


def write_unreadable_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints the safe loader refuses and torch warns about first: a state dict pickled with
    protocol 4 (torch writes 2), a TorchScript archive."""
    protocol4 = folder / "protocol4.pt"
    torch.save(tiny_state_dict(seed=3), protocol4, pickle_protocol=4)
    archive = folder / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's own deprecation notice
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(archive))
    return [protocol4, archive]


def test_a_model_too_large_for_the_device_says_so_not_that_its_checkpoint_is_wrong(
    tiny, monkeypatch
):
    import open_clip

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 7.00 GiB")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", out_of_memory)
    with pytest.raises(
        ModelError,
        match=r"^model 'tiny-clip@seed3' does not fit in the memory of cpu; free it \(another "
        r"process may hold it\), or use another device \(--device cuda:N or cpu\)$",
    ):
        load_model(ModelSpec(str(tiny["config"]), str(tiny["safetensors"])), device="cpu")


def test_an_unreadable_checkpoint_gives_the_error_alone_without_torch_warnings(tiny, tmp_path):
    for checkpoint in write_unreadable_checkpoints(tmp_path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(
                ModelError, match=rf"could not load model 'tiny-clip@{checkpoint.stem}'"
            ):
                load_model(ModelSpec(str(tiny["config"]), str(checkpoint)), device="cpu")
        assert [str(warning.message) for warning in caught] == [], checkpoint.name


def test_an_hf_hub_model_neither_cached_nor_reachable_fails_at_once_saying_so(
    offline_hub, monkeypatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the network down, not the client
    _, tried = offline_hub
    with pytest.raises(
        ModelError,
        match=r"model hf-hub:clipaudit-tests/absent is not downloaded and huggingface.co cannot be "
        r"reached; .*give local-dir:FOLDER instead of hf-hub:clipaudit-tests/absent",
    ):
        load_model(ModelSpec("hf-hub:clipaudit-tests/absent"), device="cpu")
    assert tried == ["huggingface.co"]


def test_a_cached_hf_hub_model_loads_without_the_network(offline_hub):
    cache, tried = offline_hub
    snapshot = cache / "models--clipaudit-tests--tiny" / "snapshots" / ("0" * 40)
    write_tiny_local_dir(snapshot, seed=5)  # the hub cache's layout: refs/main names the snapshot
    (cache / "models--clipaudit-tests--tiny" / "refs").mkdir()
    (cache / "models--clipaudit-tests--tiny" / "refs" / "main").write_text("0" * 40)
    loaded = load_model(ModelSpec("hf-hub:clipaudit-tests/tiny"), device="cpu")
    assert_weights_equal(loaded.model, tiny_state_dict(seed=5))
    assert tried == []  # cached: nothing to ask the network


def test_a_hub_models_record_names_the_hub_commit_it_was_loaded_from(offline_hub, tiny):
    cache, _ = offline_hub
    repo, first, second = "clipaudit-tests/tiny", "1" * 40, "2" * 40
    spec = ModelSpec(f"hf-hub:{repo}")
    write_tiny_local_dir(hub_snapshot(cache, repo, first), seed=5)
    assert load_model(spec, device="cpu").info["hub"] == {"repo": repo, "revision": first}
    # the model updated on the hub and downloaded again: refs/main names the new commit
    write_tiny_local_dir(hub_snapshot(cache, repo, second), seed=6)
    updated = load_model(spec, device="cpu")
    assert_weights_equal(updated.model, tiny_state_dict(seed=6))
    assert updated.info["hub"] == {"repo": repo, "revision": second}
    local = load_model(ModelSpec(str(tiny["config"]), str(tiny["safetensors"])), device="cpu")
    assert local.info["hub"] is None


def test_the_hub_commit_a_model_is_at_is_asked_online_and_read_from_the_cache_offline(
    offline_hub, monkeypatch
):
    """Online, a model's newest commit is the one its load downloads (the cache may hold an older
    one); offline, or with the hub not answering, the cache's commit is the one loaded."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi, constants

    from clipaudit.models import hub_revision

    cache, _ = offline_hub
    repo, cached, newer = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "1" * 40, "3" * 40
    tag = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")  # open_clip downloads its weights from repo
    (hub_snapshot(cache, repo, cached) / "open_clip_model.safetensors").write_bytes(b"weights")
    asked = []

    def model_info(self, repo_id, **options):
        asked.append(repo_id)
        return SimpleNamespace(sha=newer)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    assert hub_revision(tag) == {"repo": repo, "revision": cached} and asked == []  # offline
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub_revision(tag) == {"repo": repo, "revision": newer} and asked == [repo]
    assert hub_revision(tag, ask_hub=False) == {"repo": repo, "revision": cached}

    def unreachable(self, repo_id, **options):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(HfApi, "model_info", unreachable)
    assert hub_revision(tag) == {"repo": repo, "revision": cached}
    assert hub_revision(ModelSpec("ViT-B-32")) is None  # random weights: no hub


def test_random_weights_are_seeded_and_identified_by_a_weights_hash(tiny):
    first = load_model(ModelSpec(str(tiny["config"])), device="cpu", seed=0)
    again = load_model(ModelSpec(str(tiny["config"]), "none"), device="cpu", seed=0)
    other = load_model(ModelSpec(str(tiny["config"])), device="cpu", seed=1)
    assert first.label == again.label == "tiny-clip@random"
    assert (
        first.info["weights_sha256"] == again.info["weights_sha256"] != other.info["weights_sha256"]
    )
    assert first.info["checkpoint_sha256"] is None and first.info["random_weights_seed"] == 0


def test_local_dir_models_load_config_and_weights_together(tmp_path):
    folder = write_tiny_local_dir(tmp_path / "tiny-dir", seed=5)
    loaded = load_model(ModelSpec(f"local-dir:{folder}"), device="cpu")
    assert_weights_equal(loaded.model, tiny_state_dict(seed=5))
    with pytest.raises(SettingsError, match=r"carries its own weights"):
        ModelSpec(f"local-dir:{folder}", "laion400m_e32")
    with pytest.raises(ModelError, match=r"has no open_clip_config.json"):
        load_model(ModelSpec(f"local-dir:{tmp_path}"), device="cpu")


def test_a_local_dir_models_identity_follows_its_config_and_weights(tmp_path):
    """The image cache and a run's resumption key on a folder model's files: new weights or a
    config edit (quick_gelu: other activations, same weights) is another model."""
    from clipaudit.images import open_images
    from clipaudit.registry import load_registry
    from clipaudit.zeroshot import _model_identity, cache_key
    from tests.tiny_clip import write_image_folder

    folder = write_tiny_local_dir(tmp_path / "tiny-dir", seed=5)
    spec = ModelSpec(f"local-dir:{folder}")
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 1, "cat": 1}})
    images = open_images(tmp_path / "img", load_registry("cai2025"))
    before = (
        cache_key(load_model(spec, device="cpu"), False, None),
        _model_identity(spec, images, "fp32"),
    )
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["quick_gelu"] = not config["model_cfg"].get("quick_gelu", False)
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    edited = (
        cache_key(load_model(spec, device="cpu"), False, None),
        _model_identity(spec, images, "fp32"),
    )
    assert edited[0] != before[0] and edited[1] != before[1]
    write_tiny_local_dir(folder, seed=6)  # new weights, the first config again
    reweighted = _model_identity(spec, images, "fp32")
    assert reweighted != edited[1] and reweighted != before[1]


def test_a_pretrained_tags_run_identity_follows_the_hub_commit_of_its_weights(
    offline_hub, tmp_path
):
    """open_clip downloads a tag's weights from the hub: weights updated there (and downloaded
    again) are another model for a run's resumption; the same commit is the same model."""
    from clipaudit.images import open_images
    from clipaudit.registry import load_registry
    from clipaudit.zeroshot import _model_identity
    from tests.tiny_clip import write_image_folder

    cache, _ = offline_hub
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 1, "cat": 1}})
    images = open_images(tmp_path / "img", load_registry("cai2025"))
    spec, repo = ModelSpec("ViT-B-32", "laion2b_s34b_b79k"), "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    (hub_snapshot(cache, repo, "1" * 40) / "open_clip_model.safetensors").write_bytes(b"one")
    first = _model_identity(spec, images, "fp32")
    assert _model_identity(spec, images, "fp32") == first
    (hub_snapshot(cache, repo, "2" * 40) / "open_clip_model.safetensors").write_bytes(b"two")
    assert _model_identity(spec, images, "fp32") != first


def test_model_errors_say_what_was_expected(tiny, tmp_path):
    with pytest.raises(
        ModelError, match=r"unknown open_clip model 'ViT-B-23' \(did you mean 'ViT-B-32'"
    ):
        load_model(ModelSpec("ViT-B-23", "openai"), device="cpu")
    with pytest.raises(
        ModelError,
        match=r"unknown pretrained tag 'laion2b_s34b_b78k'.*did you mean 'laion2b_s34b_b79k'",
    ):
        load_model(ModelSpec("ViT-B-32", "laion2b_s34b_b78k"), device="cpu")
    with pytest.raises(ModelError, match=r"checkpoint file .*missing.safetensors' does not exist"):
        load_model(
            ModelSpec(str(tiny["config"]), str(tmp_path / "missing.safetensors")), device="cpu"
        )
    with pytest.raises(ModelError, match=r"checkpoint file .*/ckpts/last' does not exist \(nor"):
        load_model(ModelSpec(str(tiny["config"]), str(tmp_path / "ckpts" / "last")), device="cpu")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"model_cfg": {}}))
    with pytest.raises(
        ModelError, match=r"must have keys embed_dim, vision_cfg, text_cfg.*local-dir"
    ):
        load_model(ModelSpec(str(wrapped)), device="cpu")
    other_shape = tmp_path / "other.json"
    other_shape.write_text(json.dumps({**json.loads(tiny["config"].read_text()), "embed_dim": 16}))
    with pytest.raises(ModelError, match=r"could not load model 'other@seed3'"):
        load_model(ModelSpec(str(other_shape), str(tiny["safetensors"])), device="cpu")
    # a config named like a built-in architecture would replace it for the whole process
    import open_clip

    builtin = open_clip.get_model_config("ViT-B-32")
    (tmp_path / "configs").mkdir()
    clash = tmp_path / "configs" / "ViT-B-32.json"
    clash.write_text(json.dumps({**builtin, "embed_dim": 16}))
    with pytest.raises(ModelError, match=r"has the name of open_clip's built-in 'ViT-B-32'"):
        load_model(ModelSpec(str(clash)), device="cpu")
    assert open_clip.get_model_config("ViT-B-32") == builtin


def test_a_model_spec_takes_names_and_paths_only():
    with pytest.raises(SettingsError, match=r"a model is a name or a path, got int 5"):
        ModelSpec(5)
    with pytest.raises(SettingsError, match=r"a model is a name or a path, got NoneType None"):
        ModelSpec(None)
    with pytest.raises(SettingsError, match=r"pretrained weights are a tag or a checkpoint path"):
        ModelSpec("ViT-B-32", 32)
    spec = ModelSpec(Path("configs/mini.json"), Path("ckpts/mini.safetensors"))
    assert (spec.model, spec.pretrained, spec.label) == (
        "configs/mini.json",
        "ckpts/mini.safetensors",
        "mini",
    )


def test_device_and_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(SettingsError, match=r"fp16 autocast is for GPUs"):
        resolve_precision("fp16", cpu)
    with pytest.raises(SettingsError, match=r"device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(SettingsError, match=r"CUDA is not available"):
            resolve_device("cuda")


def test_auto_precision_is_bf16_only_on_the_gpus_that_compute_in_it(monkeypatch):
    """torch's is_bf16_supported says yes for a T4 (emulated bf16, many times slower than fp16)
    and answers for the current GPU: auto never chose fp16, and chose for another GPU."""
    from types import SimpleNamespace

    capability = {0: (7, 5), 1: (8, 0)}  # a T4, then an A100

    def index(device=None) -> int:
        device = torch.device(device) if device is not None else None
        return device.index if device is not None and device.index is not None else 0

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability[index(d)])
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda d=None: SimpleNamespace(major=capability[index(d)][0]),
    )
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda d=None: True)
    chosen = {d: resolve_precision("auto", torch.device(d)) for d in ("cuda", "cuda:0", "cuda:1")}
    assert chosen == {"cuda": "fp16", "cuda:0": "fp16", "cuda:1": "bf16"}
    assert resolve_precision("bf16", torch.device("cuda:0")) == "bf16"  # asked for: as asked
    monkeypatch.setattr(torch.version, "hip", "6.2")  # AMD GPUs compute in bf16
    assert resolve_precision("auto", torch.device("cuda:0")) == "bf16"


def test_a_gpu_index_this_machine_has_not_is_refused(monkeypatch):
    """cuda:1 on a one-GPU machine: refused when asked for, not as torch's error mid-run."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda")
    for device in ("cuda:1", "cuda:x", "cuda:"):
        with pytest.raises(SettingsError, match=r"has 1 CUDA device\(s\), cuda:0 to cuda:0"):
            resolve_device(device)
    from clipaudit.world.training import resolve_train_device

    with pytest.raises(SettingsError, match="has 1 CUDA device"):  # the world's training too
        resolve_train_device("cuda:3")


def test_labels_name_model_and_weights():
    assert ModelSpec("ViT-B-32", "laion2b_s34b_b79k").label == "ViT-B-32@laion2b_s34b_b79k"
    assert ModelSpec("ViT-B-32", "/ckpts/step_100.safetensors").label == "ViT-B-32@step_100"
    assert ModelSpec("configs/mini.json").label == "mini@random"
    assert ModelSpec("hf-hub:org/model").label == "hf-hub:org/model"
    assert ModelSpec("runs/model/mini.json", "runs/model/mini.safetensors").label == "mini"


def test_a_models_record_names_the_hardware_it_ran_on(tiny, monkeypatch):
    """GPU figures mean little without the GPU: a model's record names it, its compute
    capability and CUDA version (a CPU: its name and torch's threads)."""
    import platform

    from clipaudit.models import describe_device

    loaded = load_model(ModelSpec(str(tiny["config"]), str(tiny["safetensors"])), device="cpu")
    assert loaded.info["device_info"] == {
        "device": "cpu",
        "name": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H200")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert describe_device(torch.device("cuda:0")) == {
        "device": "cuda:0",
        "name": "NVIDIA H200",
        "capability": "9.0",
        "cuda": "12.8",
        "hip": torch.version.hip,
    }


def test_weights_not_cached_with_hf_hub_offline_set_say_so_though_the_network_is_up(
    offline_hub, monkeypatch
):
    """HF_HUB_OFFLINE makes the hub client download nothing, whatever the network: weights it
    has not cached are refused at once, naming the variable and the cache it read, not blamed on
    the model name after open_clip has built the model."""
    cache, _ = offline_hub  # HF_HUB_OFFLINE set, the cache empty
    tried: list[str | None] = []
    monkeypatch.setattr(
        "clipaudit.hub.reachable", lambda host, timeout=3.0: tried.append(host) or True
    )
    for spec, what in (
        (ModelSpec("ViT-B-32", "laion2b_s34b_b79k"), "the weights of ViT-B-32 'laion2b_s34b_b79k'"),
        (ModelSpec("hf-hub:clipaudit-tests/absent"), "model hf-hub:clipaudit-tests/absent"),
    ):
        with pytest.raises(ModelError) as caught:
            load_model(spec, device="cpu")
        message = str(caught.value)
        assert message.startswith(what), message
        assert "HF_HUB_OFFLINE is set" in message and str(cache) in message, message
    assert tried == []  # offline mode: no network check either
    # the network down and the client not offline: the host is named, and the cache to fill
    monkeypatch.setattr("clipaudit.hub.reachable", lambda host, timeout=3.0: False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelError) as caught:
        load_model(ModelSpec("ViT-B-32", "laion2b_s34b_b79k"), device="cpu")
    message = str(caught.value)
    assert "huggingface.co cannot be reached" in message and str(cache) in message, message
