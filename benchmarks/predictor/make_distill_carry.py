"""Build build/distill_carry/ (what gpu_distill.py needs on the GPU machine) from build/predictor_carry/.

    .venv/bin/python benchmarks/predictor/make_distill_carry.py

The device tool carries at most 64 MiB with the working tree, and the tree plus predictor_carry/
went past it. So: the CASTILLO jsonl files tar.gz'd, and the float16 MiniLM weights gzip'd after
zeroing the embedding rows of WordPiece ids that occur in no CASTILLO prompt (training never looks
them up: the vocabulary is cut to ids seen in training prompts), which roughly halves them.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

SRC, DST = Path("build/predictor_carry"), Path("build/distill_carry")


def main() -> None:
    (DST / "minilm").mkdir(parents=True, exist_ok=True)
    shutil.copytree(SRC / "whl", DST / "whl", dirs_exist_ok=True)
    shutil.copy(SRC / "minilm/tokenizer.json", DST / "minilm/tokenizer.json")
    tok = Tokenizer.from_file(str(SRC / "minilm/tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    texts: list[str] = []
    for f in sorted((SRC / "castillo").glob("*.jsonl")):
        with f.open() as fh:
            for line in fh:
                texts += [v if isinstance(v, str) else json.dumps(v) for v in json.loads(line).values()]
    used = set(range(1000))  # special and unused ids: kept whatever the prompts hold
    for i in range(0, len(texts), 512):
        for enc in tok.encode_batch(texts[i : i + 512], add_special_tokens=True):
            used.update(enc.ids)
    raw = bytearray((SRC / "minilm/model.safetensors").read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    for name, meta in header.items():
        if name.endswith("word_embeddings.weight"):
            start, end = meta["data_offsets"]
            rows, cols = meta["shape"]
            table = np.frombuffer(raw, dtype=np.float16, count=rows * cols, offset=8 + n + start)
            table = table.reshape(rows, cols).copy()
            unused = np.ones(rows, bool)
            unused[sorted(used)] = False
            table[unused] = 0
            raw[8 + n + start : 8 + n + end] = table.tobytes()
            print(f"{name}: zeroed {int(unused.sum())} of {rows} rows")
    with gzip.open(DST / "minilm/model.safetensors.gz", "wb", compresslevel=6) as g:
        g.write(bytes(raw))
    with tarfile.open(DST / "castillo.tar.gz", "w:gz") as t:
        t.add(SRC / "castillo", arcname="castillo")


if __name__ == "__main__":
    main()
