"""Fine-tuning a truncated MiniLM with a ranking loss (torch; the only module that needs it).

Why this shape: a frozen encoder with a ridge head ranks at tau ~0.33, the gain in Fu et al. 2024
came from training the encoder itself with ListMLE. A router cannot afford six layers over 256
tokens (~35 ms here), so the encoder keeps its first `layers` layers and sees `keep` tokens (head and
tail of the prompt); its vocabulary is cut to the WordPiece ids seen in training prompts so the
embedding table fits in the shipped artifact. The network is written out by hand (not
transformers' BertModel) so that it is exactly the computation of `encoder.NumpyEncoder`, which
serves it without torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from flotilla.predictor_training.data import Part, PromptRecord, sampled_truth
from flotilla.router.predictor import metrics, text
from flotilla.router.predictor.weights import BASE_ENCODER, quantize_rows

HeadKind = Literal["listmle", "pairwise", "regression", "classifier"]
N_BUCKETS = 10


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    head: HeadKind = "listmle"
    layers: int = 2
    keep: int = 48
    train_encoder: bool = True
    embed_rank: int | None = None
    # Keep only the most important feed-forward units (2/3 of a layer's FLOPs are its FFN).
    ffn_keep: int | None = None
    # A "wide" linear part over hashed n-grams of the whole prompt (the encoder sees `keep` tokens).
    wide_buckets: int | None = None
    # Multi-task: also rank the other serving model's lengths on its training prompts, with a
    # second head on the same encoder (the two models' log lengths correlate at ~0.76).
    joint: bool = False
    # Distillation: also rank prompts (labelled or not) in the order of a stronger teacher's scores,
    # with this weight on that ListMLE term (0: off). See `finetune(teacher=...)`.
    distill_weight: float = 0.0
    epochs: int = 12
    batch: int = 32
    lr_encoder: float = 1e-4
    lr_head: float = 2e-3
    dropout: float = 0.1
    seed: int = 0

    @property
    def name(self) -> str:
        frozen = "" if self.train_encoder else "-frozen"
        rank = f"-r{self.embed_rank}" if self.embed_rank else ""
        ffn = f"-F{self.ffn_keep}" if self.ffn_keep else ""
        lr = "" if self.lr_encoder == 1e-4 else f"-lr{self.lr_encoder:g}"
        ep = "" if self.epochs == 12 else f"-e{self.epochs}"
        wide = "-wide" if self.wide_buckets else ""
        joint = "-joint" if self.joint else ""
        kd = f"-kd{self.distill_weight:g}" if self.distill_weight else ""
        seed = f"-s{self.seed}" if self.seed else ""
        return f"{self.head}-L{self.layers}-T{self.keep}{ffn}{rank}{lr}{ep}{wide}{joint}{kd}{seed}{frozen}"

    @property
    def cost(self) -> float:
        """Per-request encoder FLOPs relative to one full MiniLM layer over one token."""
        ffn = self.ffn_keep or 1536
        return self.layers * (self.keep + 2) * (4 * 384 + 2 * ffn) / (4 * 384 + 2 * 1536)


def _torch() -> Any:
    import torch

    return torch


def load_base_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """all-MiniLM-L6-v2 weights from the package's model.safetensors (no hub, no transformers)."""
    from safetensors.numpy import load_file

    raw = load_file(str(model_dir / "model.safetensors"))
    # Stored weights may be float16 (the copy carried to the GPU machine): train in float32.
    return {
        k.removeprefix("bert.").removeprefix("0.auto_model."): v.astype(np.float32)
        for k, v in raw.items()
        if v.dtype.kind == "f"
    }


def tokenize_records(tokenizer_file: Path, records: Sequence[PromptRecord], keep: int) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    tok.no_padding()
    encs = tok.encode_batch([text.clip_text(r.text, keep) for r in records], add_special_tokens=False)
    return [text.head_tail(e.ids, keep) for e in encs]


def build_model(base: dict[str, np.ndarray], kept: np.ndarray, cfg: FinetuneConfig) -> Any:
    torch = _torch()
    nn = torch.nn
    f = torch.nn.functional
    hidden = 384
    n_heads = 12

    class Layer(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self, i: int) -> None:
            super().__init__()
            p = f"encoder.layer.{i}."
            self.qkv = nn.Linear(hidden, 3 * hidden)
            self.ao = nn.Linear(hidden, hidden)
            self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
            fi_w, fi_b = base[p + "intermediate.dense.weight"], base[p + "intermediate.dense.bias"]
            fo_w = base[p + "output.dense.weight"]
            units = np.arange(fi_w.shape[0])
            if cfg.ffn_keep:
                importance = np.linalg.norm(fi_w, axis=1) * np.linalg.norm(fo_w, axis=0)
                units = np.sort(np.argsort(-importance)[: cfg.ffn_keep])
            self.fi = nn.Linear(hidden, len(units))
            self.fo = nn.Linear(len(units), hidden)
            self.ln2 = nn.LayerNorm(hidden, eps=1e-12)
            s = p + "attention.self."
            with torch.no_grad():
                self.qkv.weight.copy_(
                    torch.from_numpy(
                        np.concatenate([base[s + n + ".weight"] for n in ("query", "key", "value")])
                    )
                )
                self.qkv.bias.copy_(
                    torch.from_numpy(
                        np.concatenate([base[s + n + ".bias"] for n in ("query", "key", "value")])
                    )
                )
                for mod, name in (
                    (self.ao, "attention.output.dense"),
                    (self.ln1, "attention.output.LayerNorm"),
                    (self.ln2, "output.LayerNorm"),
                ):
                    mod.weight.copy_(torch.from_numpy(base[p + name + ".weight"]))
                    mod.bias.copy_(torch.from_numpy(base[p + name + ".bias"]))
                self.fi.weight.copy_(torch.from_numpy(np.ascontiguousarray(fi_w[units])))
                self.fi.bias.copy_(torch.from_numpy(np.ascontiguousarray(fi_b[units])))
                self.fo.weight.copy_(torch.from_numpy(np.ascontiguousarray(fo_w[:, units])))
                self.fo.bias.copy_(torch.from_numpy(base[p + "output.dense.bias"]))
            self.drop = nn.Dropout(cfg.dropout)

        def forward(self, x: Any, bias: Any) -> Any:
            b, t, _ = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, n_heads, hidden // n_heads).permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(hidden // n_heads) + bias
            ctx = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, hidden)
            x = self.ln1(x + self.drop(self.ao(ctx)))
            return self.ln2(x + self.drop(self.fo(f.gelu(self.fi(x), approximate="tanh"))))

    class Ranker(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            word = base["embeddings.word_embeddings.weight"][kept]
            if cfg.embed_rank:
                u, s, vt = np.linalg.svd(word, full_matrices=False)
                r = cfg.embed_rank
                self.word = nn.Embedding.from_pretrained(torch.from_numpy(u[:, :r] * s[:r]), freeze=False)
                self.proj = nn.Parameter(torch.from_numpy(np.ascontiguousarray(vt[:r])))
            else:
                self.word = nn.Embedding.from_pretrained(torch.from_numpy(word), freeze=False)
                self.proj = None
            pos = base["embeddings.position_embeddings.weight"][: cfg.keep + 2]
            self.pos = nn.Parameter(
                torch.from_numpy(pos + base["embeddings.token_type_embeddings.weight"][0])
            )
            self.ln = nn.LayerNorm(hidden, eps=1e-12)
            with torch.no_grad():
                self.ln.weight.copy_(torch.from_numpy(base["embeddings.LayerNorm.weight"]))
                self.ln.bias.copy_(torch.from_numpy(base["embeddings.LayerNorm.bias"]))
            self.layers = nn.ModuleList(Layer(i) for i in range(cfg.layers))
            out = N_BUCKETS if cfg.head == "classifier" else 1
            self.wide = None
            if cfg.wide_buckets:
                self.wide = nn.Embedding(cfg.wide_buckets, 1)
                nn.init.zeros_(self.wide.weight)
            self.head = nn.Linear(hidden + text.N_CHEAP + (1 if cfg.wide_buckets else 0), out)
            self.aux_head = nn.Linear(self.head.in_features, out) if cfg.joint else None
            self.drop = nn.Dropout(cfg.dropout)

        def encode(self, ids: Any, mask: Any) -> Any:
            w = self.word(ids)
            if self.proj is not None:
                w = w @ self.proj
            x = self.drop(self.ln(w + self.pos[: ids.shape[1]]))
            bias = ((1.0 - mask) * -1e4)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

        def forward(self, *inputs: Any, aux: bool = False) -> Any:
            ids, mask, cheap, wide_ids, wide_w = inputs
            parts = [self.encode(ids, mask), cheap]
            if self.wide is not None:
                parts.append((self.wide(wide_ids)[..., 0] * wide_w).sum(1, keepdim=True))
            head: Any = self.aux_head if aux else self.head
            return head(torch.cat(parts, dim=1))

    model = Ranker()
    if not cfg.train_encoder:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(("head.", "wide.", "aux_head.")))
    return model


def _loss(out: Any, y: Any, cfg: FinetuneConfig, edges: Any) -> Any:
    torch = _torch()
    f = torch.nn.functional
    if cfg.head == "classifier":
        return f.cross_entropy(out, torch.bucketize(y, edges))
    s = out[:, 0]
    if cfg.head == "regression":
        return f.mse_loss(s, y)
    if cfg.head == "pairwise":
        diff = s[:, None] - s[None, :]
        sign = torch.sign(y[:, None] - y[None, :])
        valid = sign != 0
        return f.softplus(-sign * diff)[valid].mean()
    # ListMLE (Xia et al. 2008): likelihood of the true order under Plackett-Luce, longest first.
    order = torch.argsort(y, descending=True)
    ss = s[order]
    tail_lse = torch.logcumsumexp(ss.flip(0), 0).flip(0)
    return (tail_lse - ss).mean()


def score_of(out: Any, cfg: FinetuneConfig, centers: Any) -> Any:
    """One number per request, larger = longer (the classifier's expected bucket centre)."""
    if cfg.head == "classifier":
        return out.softmax(-1) @ centers
    return out[:, 0]


def finetune(
    parts: dict[Part, list[PromptRecord]],
    cfg: FinetuneConfig,
    model_dir: Path,
    *,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    aux: Sequence[PromptRecord] = (),
    teacher: tuple[Sequence[PromptRecord], np.ndarray] | None = None,
    score: Sequence[PromptRecord] = (),
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train one variant; returns the artifact's weight arrays and its metrics (calibrate/heldout).

    `aux`: the other serving model's fit prompts, used when cfg.joint (never its held-out ones:
    the split is by prompt id, the same for both models). `teacher`: prompts and a teacher's
    scores for them, ranked with weight cfg.distill_weight (they need no length labels).
    `score`: more prompts to score with the trained model (result["extra_scores"]), e.g. to
    make this model a teacher."""
    torch = _torch()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    base = load_base_weights(model_dir)
    vocab_size = base["embeddings.word_embeddings.weight"].shape[0]
    tok_file = model_dir / "tokenizer.json"
    seqs = {p: tokenize_records(tok_file, parts[p], cfg.keep) for p in Part}
    aux = list(aux) if cfg.joint else []
    aux_seqs = tokenize_records(tok_file, aux, cfg.keep) if aux else []
    kd = list(teacher[0]) if teacher is not None and cfg.distill_weight else []
    kd_seqs = tokenize_records(tok_file, kd, cfg.keep) if kd else []
    kept = text.VocabMap.keep_from(seqs[Part.FIT] + seqs[Part.CALIBRATE] + aux_seqs + kd_seqs, vocab_size)
    vmap = text.VocabMap(kept, vocab_size)

    def tensors_of(records: Sequence[PromptRecord], id_lists: list[list[int]]) -> tuple[Any, ...]:
        ids, mask = text.pad_batch(id_lists)
        cheap = np.stack([text.cheap_features(r.text, r.input_tokens) for r in records])
        grams = [text.wide_ids(r.text, cfg.wide_buckets or 1) for r in records]
        wide_ids = np.zeros((len(grams), max(1, *(len(g) for g in grams))), dtype=np.int64)
        wide_w = np.zeros(wide_ids.shape, dtype=np.float32)
        for i, g in enumerate(grams):
            wide_ids[i, : len(g)] = g
            wide_w[i, : len(g)] = 1.0 / np.sqrt(max(len(g), 1))
        return tuple(torch.from_numpy(a).to(device) for a in (vmap(ids), mask, cheap, wide_ids, wide_w))

    data = {p: tensors_of(parts[p], seqs[p]) for p in Part}
    y_fit = torch.tensor(np.log([r.mean_output for r in parts[Part.FIT]]), dtype=torch.float32, device=device)
    aux_data = tensors_of(aux, aux_seqs) if aux else ()
    y_aux = torch.tensor(np.log([r.mean_output for r in aux]), dtype=torch.float32, device=device)
    kd_data = tensors_of(kd, kd_seqs) if kd else ()
    y_kd = torch.tensor(teacher[1] if kd and teacher else [], dtype=torch.float32, device=device)
    listmle = cfg.model_copy(update={"head": "listmle"})
    qs = np.quantile(y_fit.cpu().numpy(), np.linspace(0, 1, N_BUCKETS + 1))
    edges = torch.tensor(qs[1:-1], dtype=torch.float32, device=device)
    centers = torch.tensor((qs[1:] + qs[:-1]) / 2, dtype=torch.float32, device=device)

    model = build_model(base, kept, cfg).to(device)
    # The head and the wide part start from zero or near it: they get the larger learning rate.
    fresh = ("head.", "wide.", "aux_head.")
    head_params = [p for n, p in model.named_parameters() if n.startswith(fresh)]
    enc_params = [p for n, p in model.named_parameters() if not n.startswith(fresh) and p.requires_grad]
    groups = [{"params": head_params, "lr": cfg.lr_head}]
    if enc_params:
        groups.append({"params": enc_params, "lr": cfg.lr_encoder})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    n_fit = len(parts[Part.FIT])
    steps_per_epoch = n_fit // cfg.batch
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.1 * total)) * max(0.0, 1.0 - s / total)
    )
    cal_one, _ = sampled_truth(parts[Part.CALIBRATE], seed=1)

    def scores(p: Part) -> np.ndarray:
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(data[p][0]), 256):
                o = model(*(t[i : i + 256] for t in data[p]))
                out.append(score_of(o, cfg, centers).float().cpu().numpy())
        model.train()
        return np.concatenate(out)

    best = (-2.0, 0, {k: v.detach().clone() for k, v in model.state_dict().items()})
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        perm = rng.permutation(n_fit)
        for s in range(steps_per_epoch):
            idx = torch.from_numpy(perm[s * cfg.batch : (s + 1) * cfg.batch]).to(device)
            ids, mask, cheap, wide_ids, wide_w = (t[idx] for t in data[Part.FIT])
            width = int(mask.sum(1).max().item())
            out = model(ids[:, :width], mask[:, :width], cheap, wide_ids, wide_w)
            loss = _loss(out, y_fit[idx], cfg, edges)
            if aux:
                j = torch.from_numpy(rng.choice(len(aux), cfg.batch, replace=False)).to(device)
                a_ids, a_mask, a_cheap, a_wide, a_w = (t[j] for t in aux_data)
                a_width = int(a_mask.sum(1).max().item())
                a_out = model(a_ids[:, :a_width], a_mask[:, :a_width], a_cheap, a_wide, a_w, aux=True)
                loss = loss + _loss(a_out, y_aux[j], cfg, edges)
            if kd:
                j = torch.from_numpy(rng.choice(len(kd), cfg.batch, replace=False)).to(device)
                k_ids, k_mask, k_cheap, k_wide, k_w = (t[j] for t in kd_data)
                k_width = int(k_mask.sum(1).max().item())
                k_out = model(k_ids[:, :k_width], k_mask[:, :k_width], k_cheap, k_wide, k_w)
                loss = loss + cfg.distill_weight * _loss(k_out, y_kd[j], listmle, edges)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        tau = metrics.batched_tau(scores(Part.CALIBRATE), cal_one, repeats=5)
        if tau > best[0]:
            best = (tau, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[2])
    weights = export_weights(model, kept, cfg)
    # Score with exactly what ships: the int8 weights, dequantised, put back into the network.
    _load_quantized(model, weights, cfg)
    held = parts[Part.HELDOUT]
    one, rest = sampled_truth(held)
    held_scores = scores(Part.HELDOUT)

    def _score_records(records: Sequence[PromptRecord]) -> list[float]:
        t = tensors_of(records, tokenize_records(tok_file, records, cfg.keep))
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(t[0]), 256):
                out.append(score_of(model(*(x[i : i + 256] for x in t)), cfg, centers).float().cpu().numpy())
        model.train()
        return [float(v) for v in np.concatenate(out)]

    ds = [r.dataset for r in held]
    result = {
        "name": cfg.name,
        "config": cfg.model_dump(),
        "best_epoch": best[1],
        "train_s": round(time.perf_counter() - t0, 1),
        "weights_bytes": int(sum(a.nbytes for a in weights.values())),
        "vocab_kept": len(kept),
        "calibrate_tau": metrics.batched_tau(scores(Part.CALIBRATE), cal_one),
        "heldout_tau_sample": metrics.tau_by_group(held_scores, one, ds),
        "heldout_tau_mean": metrics.tau_by_group(held_scores, np.array([r.mean_output for r in held]), ds),
        "ceiling": metrics.tau_by_group(rest, one, ds),
        "calibrate_scores": scores(Part.CALIBRATE).tolist(),
        "extra_scores": _score_records(score) if score else [],
        "heldout_scores": held_scores.tolist(),
    }
    log(
        f"{cfg.name}: cal {result['calibrate_tau']:.3f} held {result['heldout_tau_sample']['all']:.3f} "
        f"epoch {best[1]} {result['train_s']}s"
    )
    return weights, result


def export_weights(model: Any, kept: np.ndarray, cfg: FinetuneConfig) -> dict[str, np.ndarray]:
    """The artifact's arrays: matrices int8 with one scale per output column, the rest float32."""
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {"vocab_kept": kept.astype(np.int32), "pos": sd["pos"]}
    out["word_q"], out["word_s"] = quantize_rows(sd["word.weight"])
    if cfg.embed_rank:
        out["word_proj"] = sd["proj"]
    out["emb_ln_w"], out["emb_ln_b"] = sd["ln.weight"], sd["ln.bias"]
    for i in range(cfg.layers):
        p = f"layers.{i}."
        for name in ("qkv", "ao", "fi", "fo"):
            # x @ W^T: store W (out, in) row-quantised, i.e. one scale per output unit.
            out[f"l{i}.{name}_q"], out[f"l{i}.{name}_s"] = quantize_rows(sd[p + name + ".weight"])
            out[f"l{i}.{name}_b"] = sd[p + name + ".bias"]
        for name in ("ln1", "ln2"):
            out[f"l{i}.{name}_w"], out[f"l{i}.{name}_b"] = sd[p + name + ".weight"], sd[p + name + ".bias"]
    if cfg.wide_buckets:
        out["wide"] = sd["wide.weight"][:, 0]
    if cfg.head != "classifier":
        out["head_w"], out["head_b"] = sd["head.weight"][0], sd["head.bias"]
    return out


def _load_quantized(model: Any, w: dict[str, np.ndarray], cfg: FinetuneConfig) -> None:
    torch = _torch()
    sd = model.state_dict()

    def put(key: str, arr: np.ndarray) -> None:
        sd[key].copy_(torch.from_numpy(np.asarray(arr, dtype=np.float32)))

    put("word.weight", w["word_q"].astype(np.float32) * w["word_s"][:, None])
    for i in range(cfg.layers):
        for name in ("qkv", "ao", "fi", "fo"):
            put(
                f"layers.{i}.{name}.weight",
                w[f"l{i}.{name}_q"].astype(np.float32) * w[f"l{i}.{name}_s"][:, None],
            )


__all__ = ["BASE_ENCODER", "FinetuneConfig", "finetune"]
