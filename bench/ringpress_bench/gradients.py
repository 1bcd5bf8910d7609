"""Real training gradients for the codec benchmarks, generated once and cached.

A character-level language model (byte embedding 64 -> 2-layer LSTM, hidden 512 -> linear head
over 256 byte values; ~3.4M fp32 parameters) is trained with Adam (lr 2e-3, seeded with
``torch.manual_seed(0)``) on the Python standard library's own source text: the top-level
``*.py`` files in ``os.path.dirname(os.__file__)``, sorted by name, concatenated as bytes. After
``TRAIN_STEPS`` warm-up steps (the loss is printed as it falls) the flattened fp32 gradient of
each of the following steps is collected (and the step still taken), and the steps are
concatenated until at least ``min_elems`` values are available. The result is cached as ``.npy``
(``bench/.cache/`` in a source checkout, else ``$XDG_CACHE_HOME/ringpress`` or
``~/.cache/ringpress``; see ``_common.cache_dir``) so the benchmarks themselves never train.
Building the cache needs torch (once); without it :class:`GradientsUnavailable` says so.

Public functions:

* :func:`fp32_gradients` -- the concatenated fp32 gradients (1-D ``float32``).
* :func:`bf16_gradients` -- the same values rounded to bfloat16 (round to nearest, ties to even),
  as raw ``uint16`` bit patterns.
* :func:`topk_sparse` -- a copy with all but the largest-magnitude ``ratio`` of entries zeroed.

Run ``ringpress bench gradients`` to build the cache and print sizes and the loss curve.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ._common import cache_dir
from .runner import ArgParser, UsageExit

SEED = 0
EMBED = 64
HIDDEN = 512
LAYERS = 2
SEQ_LEN = 128
BATCH = 16
LR = 2e-3
# Warm-up steps before gradients are collected. RINGPRESS_BENCH_TRAIN_STEPS lowers it where only
# the pipeline matters, not how trained the model is: the test suite uses 40, which keeps the
# fresh-clone CI from training for ~100 s (the cache file name carries the number).
TRAIN_STEPS = int(os.environ.get("RINGPRESS_BENCH_TRAIN_STEPS") or 300)
MIN_COLLECT_STEPS = 5
DEFAULT_MIN_ELEMS = 4 << 20
# Bump when anything above changes so stale caches are not reused.
CACHE_VERSION = 1


def _corpus() -> bytes:
    """Top-level stdlib ``.py`` sources, sorted by file name, concatenated as raw bytes."""
    root = Path(os.path.dirname(os.__file__))
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    return b"".join(p.read_bytes() for p in files)


class GradientsUnavailable(UsageExit):
    """No cached gradients and no torch to generate them (the message says what to install)."""


def _cache_paths() -> tuple[Path, Path]:
    stem = f"grad_v{CACHE_VERSION}_lstm{HIDDEN}x{LAYERS}_s{SEED}_t{TRAIN_STEPS}"
    d = cache_dir()
    return d / f"{stem}.npy", d / f"{stem}.json"


def _train_and_collect(min_elems: int, verbose: bool = True) -> tuple[np.ndarray, dict]:
    """Train the model, then return ``>= min_elems`` concatenated fp32 gradients and metadata."""
    try:
        import torch
        from torch import nn
    except ImportError as e:
        raise GradientsUnavailable(
            f"the codec benchmarks run on real gradients of a small model, generated once with "
            f"torch and cached in {cache_dir()}; torch is not importable ({e}): "
            f"pip install 'ringpress[torch]'"
        ) from None

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    corpus = _corpus()
    data = torch.frombuffer(bytearray(corpus), dtype=torch.uint8).long()

    class CharLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(256, EMBED)
            self.rnn = nn.LSTM(EMBED, HIDDEN, num_layers=LAYERS, batch_first=True)
            self.head = nn.Linear(HIDDEN, 256)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(self.emb(x))
            return self.head(out)

    model = CharLSTM()
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.Adam(params, lr=LR)
    gen = torch.Generator().manual_seed(SEED)

    def step() -> float:
        starts = torch.randint(0, data.numel() - SEQ_LEN - 1, (BATCH,), generator=gen)
        idx = starts[:, None] + torch.arange(SEQ_LEN + 1)[None, :]
        seq = data[idx]
        logits = model(seq[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 256), seq[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        return loss.item()

    n_collect = max(MIN_COLLECT_STEPS, math.ceil(min_elems / n_params))
    if verbose:
        print(
            f"corpus {len(corpus) / 1e6:.2f} MB, model {n_params / 1e6:.2f}M params, "
            f"{TRAIN_STEPS} train steps + {n_collect} collected steps",
            flush=True,
        )
    t0 = time.perf_counter()
    losses: list[float] = []
    window: list[float] = []
    for i in range(TRAIN_STEPS):
        window.append(step())
        if (i + 1) % 25 == 0:
            losses.append(sum(window) / len(window))
            window.clear()
            if verbose:
                print(
                    f"  step {i + 1:4d}  loss {losses[-1]:.3f}  ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )

    chunks: list[np.ndarray] = []
    collect_losses: list[float] = []
    for _ in range(n_collect):
        # step() leaves the gradients of its batch in .grad (opt.step() does not clear them).
        collect_losses.append(step())
        flat = torch.cat([p.grad.detach().reshape(-1) for p in params])
        chunks.append(flat.numpy().astype(np.float32, copy=True))
    grads = np.concatenate(chunks)
    meta = {
        "cache_version": CACHE_VERSION,
        "model": f"char-LSTM emb{EMBED} hidden{HIDDEN} layers{LAYERS}",
        "n_params": n_params,
        "corpus_bytes": len(corpus),
        "seq_len": SEQ_LEN,
        "batch": BATCH,
        "lr": LR,
        "train_steps": TRAIN_STEPS,
        "collect_steps": n_collect,
        "loss_every_25": losses,
        "collect_losses": collect_losses,
        "elements": int(grads.size),
        "train_seconds": time.perf_counter() - t0,
        "torch": torch.__version__,
    }
    if verbose:
        print(
            f"collected {grads.size / 1e6:.2f}M elements ({grads.nbytes / 2**20:.1f} MiB) "
            f"in {meta['train_seconds']:.0f} s",
            flush=True,
        )
    return grads, meta


def _load(npy: Path, min_elems: int) -> np.ndarray | None:
    if npy.exists():
        arr = np.load(npy, mmap_mode="r")
        if arr.size >= min_elems:
            return np.asarray(arr[:], dtype=np.float32)
    return None


def _load_or_build(min_elems: int, verbose: bool) -> np.ndarray:
    npy, meta_path = _cache_paths()
    got = _load(npy, min_elems)
    if got is not None:
        return got
    # Several processes (the ranks of one benchmark) may miss the cache at once: one trains, the
    # others sleep on the lock (not in a collective, whose timeout the training could outlast)
    # and then load what it wrote.
    npy.parent.mkdir(parents=True, exist_ok=True)
    with open(npy.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        got = _load(npy, min_elems)
        if got is not None:
            return got
        grads, meta = _train_and_collect(min_elems, verbose=verbose)
        tmp = npy.with_suffix(".tmp.npy")
        np.save(tmp, grads)
        os.replace(tmp, npy)
        meta_path.write_text(json.dumps(meta, indent=1))
    return grads


def cache_metadata() -> dict | None:
    """Metadata (model, losses, sizes) of the cached gradients, or ``None`` if not built yet."""
    _, meta_path = _cache_paths()
    if not meta_path.exists():
        return None
    return json.loads(meta_path.read_text())


def fp32_gradients(min_elems: int = DEFAULT_MIN_ELEMS, verbose: bool = True) -> np.ndarray:
    """All cached fp32 gradients (1-D ``float32``, at least ``min_elems`` long); trains if needed.

    The array holds whole steps, so it is usually longer than ``min_elems``; callers truncate.
    """
    return _load_or_build(int(min_elems), verbose)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round fp32 to bfloat16 (nearest, ties to even) and return the raw ``uint16`` patterns."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():  # keep NaNs NaN (rounding could carry a NaN payload into infinity)
        out[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return out


def bf16_gradients(min_elems: int = DEFAULT_MIN_ELEMS, verbose: bool = True) -> np.ndarray:
    """The :func:`fp32_gradients` values rounded to bfloat16, as raw ``uint16`` bit patterns."""
    return to_bf16_bits(fp32_gradients(min_elems, verbose))


def topk_sparse(x: np.ndarray, ratio: float = 0.01) -> np.ndarray:
    """Copy of ``x`` (float32) with all but the ``ratio`` largest-magnitude entries set to zero."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    k = max(1, min(x.size, round(ratio * x.size)))
    out = np.zeros_like(x)
    keep = np.argpartition(np.abs(x), x.size - k)[x.size - k :]
    out[keep] = x[keep]
    return out


def main(argv: list[str] | None = None, prog: str = "ringpress bench gradients") -> int:
    ap = ArgParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--min-elems", type=int, default=16 << 20, help="elements to collect")
    args = ap.parse_args(argv)
    g = fp32_gradients(args.min_elems)  # GradientsUnavailable: the runner's exit 2
    meta = cache_metadata() or {}
    if meta.get("loss_every_25"):
        print("loss (mean per 25 steps):", " ".join(f"{v:.2f}" for v in meta["loss_every_25"]))
    b = to_bf16_bits(g)
    s = topk_sparse(g)
    print(
        f"fp32: {g.size} elements, {g.nbytes / 2**20:.1f} MiB, std {g.std():.3e}, "
        f"max|g| {np.abs(g).max():.3e}, zeros {np.mean(g == 0):.2%}"
    )
    print(f"bf16: {b.size} elements, {b.nbytes / 2**20:.1f} MiB")
    print(f"topk 1%: {np.count_nonzero(s)} non-zeros of {s.size}")
    print(f"cache: {_cache_paths()[0]}")
    return 0
