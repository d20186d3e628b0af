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
  example a venv with `pip install "transformers<5" numpy safetensors`), writes
  tokenizer_slow.safetensors from the Python CLIPTokenizer of 4.x, which cleans text with
  BasicTokenizer when ftfy is missing, and prints the captions where CLIPTokenizerFast of the same
  version gives other ids.

Each file holds, per folder kind k in (sd1, sd2): k.input_ids (N, 77) from
tokenizer(text, padding="max_length", max_length=77, truncation=True); k.length (N,), the tokens
before padding (sum of the attention mask); k.content (flat) and k.offsets (N+1,), the ids of
tokenizer(text, add_special_tokens=False) untruncated, caption i at content[offsets[i]:offsets[i+1]].
"""
import gzip
import hashlib
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.dirname(HERE)
BPE_GZ = os.path.join(TESTDATA, "tokenizer", "bpe_simple_vocab_16e6.txt.gz")
CAPTIONS = os.path.join(TESTDATA, "tokenizer", "captions.txt")
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


def added(content):
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_folder(out, kind):
    """A tokenizer folder like the one in an SD 1.x (sd1) or SD 2.x (sd2) model folder."""
    vocab, merges = clip_vocab()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    # The sd2 folder names "!" only in special_tokens_map.json (tokenizer_config.json keeps
    # "<|endoftext|>"): the map wins, in transformers 4 and 5 alike, and the Go loader must agree.
    pad = "<|endoftext|>" if kind == "sd1" else "!"
    special = {"bos_token": added("<|startoftext|>"), "eos_token": added("<|endoftext|>"),
               "pad_token": pad, "unk_token": added("<|endoftext|>")}
    with open(os.path.join(out, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
    config = {"add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": MAX_LEN,
              "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}
    for key in ("bos_token", "eos_token", "unk_token"):
        config[key] = dict(special[key], __type="AddedToken")
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)


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
    common.save("tokenizer.safetensors", tensors, meta=meta("transformers.CLIPTokenizer (tokenizers backend)", sha))


def generate_slow():
    """tokenizer_slow.safetensors from transformers 4.x's Python CLIPTokenizer without ftfy."""
    import importlib.util

    import transformers
    from safetensors.numpy import save_file
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
    save_file(arrays, os.path.join(TESTDATA, "golden", "tokenizer_slow.safetensors"), metadata=m)


if __name__ == "__main__":
    if sys.argv[1:] != ["slow"]:
        sys.exit("usage: python gen_tokenizer.py slow   (with transformers 4.x; generate() runs from main.py)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    generate_slow()
