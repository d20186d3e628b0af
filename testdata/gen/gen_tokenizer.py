"""Golden token ids for the CLIP tokenizer (internal/tokenizer).

Vocabulary: CLIP's own BPE file, testdata/tokenizer/bpe_simple_vocab_16e6.txt.gz (from the
open-clip-torch wheel, MIT), turned into vocab.json + merges.txt the way CLIP builds them and put
in two tokenizer folders shaped like the ones in model folders: SD 1.x (pad = "<|endoftext|>",
id 49407) and SD 2.x (pad = "!", id 0). Captions: testdata/tokenizer/captions.txt, one JSON
string per line.

Two references, one file each:

- generate() (main.py, the reference stack: transformers 5) writes tokenizer.safetensors from
  transformers' CLIPTokenizer. In transformers 5 that class is the `tokenizers` (Rust) pipeline,
  the one CLIPTokenizerFast was in transformers 4.
- `python testdata/gen/gen_tokenizer.py slow`, run with transformers 4.x and without ftfy (for
  example a venv with `pip install "transformers<5" numpy`), writes
  tokenizer_slow.safetensors from the Python CLIPTokenizer of 4.x, which cleans text with
  BasicTokenizer when ftfy is missing, and prints the captions where CLIPTokenizerFast of the same
  version gives other ids.

tokenizer.safetensors also holds, for each folder of testdata/tokenizer/special_cases.json (special
token settings as config files write them), case.<name>.input_ids (P, 77) for the PROBES, and
case.<name>.saved_input_ids after a save_pretrained and reload, whose tokenizer.json added tokens
and tokenizer_config.json the metadata keeps.

Each file holds, per folder kind k in (sd1, sd2): k.input_ids (N, 77) from
tokenizer(text, padding="max_length", max_length=77, truncation=True); k.length (N,), the tokens
before padding (sum of the attention mask); k.content (flat) and k.offsets (N+1,), the ids of
tokenizer(text, add_special_tokens=False) untruncated, caption i at content[offsets[i]:offsets[i+1]].
"""
import gzip
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.dirname(HERE)
BPE_GZ = os.path.join(TESTDATA, "tokenizer", "bpe_simple_vocab_16e6.txt.gz")
CAPTIONS = os.path.join(TESTDATA, "tokenizer", "captions.txt")
CASES = os.path.join(TESTDATA, "tokenizer", "special_cases.json")
# Probes for the special-token settings: special tokens in other case, inside words, "!".
PROBES = ["<|ENDOFTEXT|> a <|StartOfText|> b", "a!b <|endoftext|>!!", "<|startoftext|>x<|endoftext|>", "wow! a cat"]
MAX_LEN = 77
KINDS = ("sd1", "sd2")


def bytes_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab():
    """The vocabulary and merges the way CLIP's SimpleTokenizer builds them from the BPE file."""
    lines = gzip.open(BPE_GZ).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {v: i for i, v in enumerate(vocab)}, merges


def write_vocab(out):
    """vocab.json and merges.txt from CLIP's BPE file, as in every SD model folder."""
    vocab, merges = clip_vocab()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


def write_folder(out, kind):
    """A tokenizer folder like an SD 1.x (sd1) or SD 2.x (sd2) model's: the vocabulary and the
    config files of testdata/tokenizer/<kind>/. The sd2 folder names "!" as pad token only in
    special_tokens_map.json (tokenizer_config.json keeps "<|endoftext|>"): the map wins."""
    write_vocab(out)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TESTDATA, "tokenizer", kind, name), out)


def write_case(out, case):
    """A tokenizer folder for one entry of special_cases.json."""
    write_vocab(out)
    for key in ("special_tokens_map", "tokenizer_config"):
        if key in case:
            with open(os.path.join(out, key + ".json"), "w", encoding="utf-8") as f:
                json.dump(case[key], f)


def read_captions():
    with open(CAPTIONS, "rb") as f:
        raw = f.read()
    lines = raw.decode("utf-8").split("\n")
    if lines[-1] != "":
        raise ValueError(f"{CAPTIONS}: the last line must end with a newline")
    return [json.loads(line) for line in lines[:-1]], hashlib.sha256(raw).hexdigest()


def encode_all(tok, captions, kind):
    """The tensors of one folder kind as int64 numpy arrays."""
    import numpy as np

    padded = tok(captions, padding="max_length", max_length=MAX_LEN, truncation=True)
    content = [tok(c, add_special_tokens=False)["input_ids"] for c in captions]
    offsets = np.cumsum([0] + [len(c) for c in content])
    return {
        f"{kind}.input_ids": np.array(padded["input_ids"], dtype=np.int64),  # (N, 77)
        f"{kind}.length": np.array([sum(m) for m in padded["attention_mask"]], dtype=np.int64),  # (N,)
        f"{kind}.content": np.array([i for c in content for i in c], dtype=np.int64),  # (sum of lengths,)
        f"{kind}.offsets": offsets.astype(np.int64),  # (N+1,)
    }


def probe_ids(tok):
    return tok(PROBES, padding="max_length", max_length=MAX_LEN, truncation=True)["input_ids"]


def meta(tok_class, captions_sha):
    import transformers

    return {"reference": tok_class, "transformers_version": transformers.__version__, "captions_sha256": captions_sha,
            "max_length": str(MAX_LEN), "sd1_pad": "<|endoftext|>", "sd2_pad": "!"}


def generate():
    """tokenizer.safetensors from the reference stack's CLIPTokenizer (transformers 5)."""
    import torch

    import common
    import transformers
    from transformers import CLIPTokenizer

    if int(transformers.__version__.split(".")[0]) < 5:
        raise RuntimeError(f"gen_tokenizer: generate() wants transformers 5, found {transformers.__version__}")
    captions, sha = read_captions()
    tensors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            write_folder(os.path.join(tmp, kind), kind)
            tok = CLIPTokenizer.from_pretrained(os.path.join(tmp, kind))
            for name, arr in encode_all(tok, captions, kind).items():
                tensors[name] = torch.from_numpy(arr)
        extra = {}
        with open(CASES, encoding="utf-8") as f:
            cases = json.load(f)
        for case in cases:
            name = case["name"]
            folder, saved = os.path.join(tmp, "case_" + name), os.path.join(tmp, "saved_" + name)
            write_case(folder, case)
            tok = CLIPTokenizer.from_pretrained(folder)
            tensors[f"case.{name}.input_ids"] = torch.tensor(probe_ids(tok), dtype=torch.int64)  # (P, 77)
            # The same tokenizer as transformers 5 saves it (tokenizer.json + tokenizer_config.json):
            # Go rebuilds that folder from the vocabulary and the two pieces kept in the metadata.
            tok.save_pretrained(saved)
            with open(os.path.join(saved, "tokenizer.json"), encoding="utf-8") as f:
                extra[f"case.{name}.saved_added_tokens"] = json.dumps(json.load(f)["added_tokens"])
            with open(os.path.join(saved, "tokenizer_config.json"), encoding="utf-8") as f:
                extra[f"case.{name}.saved_config"] = json.dumps(json.load(f))
            again = CLIPTokenizer.from_pretrained(saved)
            tensors[f"case.{name}.saved_input_ids"] = torch.tensor(probe_ids(again), dtype=torch.int64)  # (P, 77)
    m = meta("transformers.CLIPTokenizer (tokenizers backend)", sha)
    m.update(extra)
    m["probes"] = json.dumps(PROBES)
    common.save("tokenizer.safetensors", tensors, meta=m)


def generate_slow():
    """tokenizer_slow.safetensors from transformers 4.x's Python CLIPTokenizer without ftfy."""
    import importlib.util

    import transformers
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    if not transformers.__version__.startswith("4."):
        raise RuntimeError(f"gen_tokenizer slow: wants transformers 4.x, found {transformers.__version__}")
    if importlib.util.find_spec("ftfy") is not None:
        raise RuntimeError("gen_tokenizer slow: ftfy is installed; the golden is for CLIPTokenizer without it")
    captions, sha = read_captions()
    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            write_folder(os.path.join(tmp, kind), kind)
            slow = CLIPTokenizer.from_pretrained(os.path.join(tmp, kind))
            fast = CLIPTokenizerFast.from_pretrained(os.path.join(tmp, kind))
            arrays.update(encode_all(slow, captions, kind))
            for c in captions:
                s, f = slow(c)["input_ids"], fast(c)["input_ids"]
                if s != f:
                    print(f"{kind}: slow and fast differ on {c!r}:\n  slow {s}\n  fast {f}")
    m = meta("transformers.CLIPTokenizer (Python, without ftfy)", sha)
    m["python_unicodedata"] = __import__("unicodedata").unidata_version
    save_sorted(os.path.join(TESTDATA, "golden", "tokenizer_slow.safetensors"), arrays, m)


def save_sorted(path, arrays, metadata):
    """Write int64 arrays as safetensors with a sorted header, so that a rerun writes the same
    bytes (safetensors' own writer, without torch, orders the metadata at random)."""
    import numpy as np

    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(arrays):
        data = np.ascontiguousarray(arrays[name], dtype="<i8").tobytes()
        header[name] = {"dtype": "I64", "shape": list(arrays[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        f.writelines(blobs)


if __name__ == "__main__":
    if sys.argv[1:] != ["slow"]:
        sys.exit("usage: python gen_tokenizer.py slow   (with transformers 4.x; generate() runs from main.py)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    generate_slow()
