"""
Load a Hugging Face causal LM with its own tokenizer, by hub name, name@revision or local folder, for
measure.py.

    model, tokenizer = load_hf("EleutherAI/pythia-160m@step1000", device="cpu", dtype="float32")
    encode = hf_encode(tokenizer); prefix = bos_prefix(tokenizer, "auto", "pythia-160m")

Everything a user can get wrong (an unknown name, no network and no cached copy, a gated model, a bad
revision, a folder without a tokenizer or weights, a model that is not a causal LM) becomes a ValueError of
one sentence saying what to do. transformers is imported here only, so the rest of the project runs without
it.
"""

import os

import torch


def split_revision(spec):
    """('EleutherAI/pythia-160m', 'step1000') for 'EleutherAI/pythia-160m@step1000'; (spec, None) without '@'.
    An existing folder is taken whole, so a folder name may hold '@'."""
    if os.path.exists(spec) or "@" not in spec:
        return spec, None
    name, _, revision = spec.rpartition("@")
    if not name or not revision:
        raise ValueError(f"'{spec}' is not NAME@REVISION; write e.g. EleutherAI/pythia-160m@step1000.")
    return name, revision


def short_name(spec):
    """The name a table and a figure show: the last part of the name or folder, with its revision."""
    name, revision = split_revision(spec)
    return os.path.basename(name.rstrip("/")) + (f"@{revision}" if revision else "")


def error_chain(e):
    """The exception and everything it was raised from, outermost first."""
    chain = []
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


def hub_error(e, name, revision, what):
    """One sentence for an error of transformers' from_pretrained on `what` ('model', 'tokenizer', ...)."""
    kinds = {type(x).__name__ for x in error_chain(e)}
    text = " ".join(str(x) for x in error_chain(e))
    if "GatedRepoError" in kinds:
        return (f"{name} is a gated model: accept its licence on its Hugging Face page, log in with "
                "`hf auth login`, and run again.")
    if "RevisionNotFoundError" in kinds or "is not a valid git identifier" in text:
        return (f"{name} has no revision '{revision}'; give one of its branches, tags or commits "
                "(Pythia's go from step0 to step143000).")
    if "RepositoryNotFoundError" in kinds or "is not a valid model identifier" in text:
        return f"{name} is neither a local folder nor a model on the Hugging Face hub; check the name."
    if "HFValidationError" in kinds:
        return f"{name} is neither an existing folder nor a hub name like owner/model; check the path."
    if {"LocalEntryNotFoundError", "OfflineModeIsEnabled"} & kinds or "couldn't connect" in text:
        return (f"cannot reach the Hugging Face hub and {name} is not in the local cache; download it once "
                "while online, or give a local folder.")
    if "trust_remote_code" in text:
        return (f"{name} needs code from its own repository, which measure.py does not run; "
                "use a version that transformers supports natively (for OLMo, allenai/OLMo-1B-hf).")
    if what == "tokenizer":
        return (f"{name} has no tokenizer that transformers can load; save the model's tokenizer there too "
                "(tokenizer.save_pretrained).")
    if "does not appear to have a file named" in text or "no file named" in text:
        return (f"{name} holds no {what} files transformers can load; save the model there with "
                "save_pretrained.")
    if "Unrecognized model" in text or "config.json" in text:
        return (f"{name} holds no config.json of a transformers model; give a folder written by "
                "save_pretrained.")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"cannot load the {what} of {name} ({first.rstrip('.')}); check the name or folder."


def load_hf(spec, device, dtype):
    """(model, tokenizer) of a causal LM: its config is read first, so a wrong name fails before any download
    of weights. The model is loaded in dtype ('float32', 'bfloat16', 'float16'), moved to device, in eval
    mode."""
    try:
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
    except ImportError:
        raise ValueError("measuring a Hugging Face model needs transformers: "
                         "pip install transformers") from None
    transformers.logging.set_verbosity_error()  # no warnings about long texts: we cut them into windows
    transformers.logging.disable_progress_bar()  # one progress line is ours (measure.py)
    name, revision = split_revision(spec)
    if revision and os.path.isdir(name):
        raise ValueError(f"{name} is a local folder, which has no revisions; drop '@{revision}'.")

    def load(what, loader, **kwargs):
        try:
            return loader.from_pretrained(name, revision=revision, **kwargs)
        except (OSError, ValueError, KeyError) as e:  # KeyError: a model_type this transformers does not know
            raise ValueError(hub_error(e, name, revision, what)) from None

    config = load("config", AutoConfig)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ValueError(f"{name} is a {type(config).__name__.removesuffix('Config')} model, not a causal "
                         "language model; give a decoder-only LM such as GPT-2, Llama, Qwen or Pythia.")
    tokenizer = load("tokenizer", AutoTokenizer)
    # transformers makes an empty one for a bare folder
    if not hf_encode(tokenizer)("The tokens of a sentence."):
        raise ValueError(f"{name} has no tokenizer files (tokenizer.json, vocab.json ...); save the model's "
                         "tokenizer there too (tokenizer.save_pretrained).")
    model = load("model", AutoModelForCausalLM, dtype=getattr(torch, dtype))
    return model.to(device).eval(), tokenizer


def hf_encode(tokenizer):
    """encode(text) -> list of token ids, the text's tokens only (no special tokens: bos_prefix adds
    those)."""
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def bos_prefix(tokenizer, bos, name):
    """Token ids to put before every window. bos = 'auto': the special tokens the tokenizer itself puts before
    a text (Llama's and Gemma's <bos>; none for GPT-2, Qwen or Pythia), as the paper's code did; 'always': the
    tokenizer's BOS token; 'never': nothing."""
    if bos == "never":
        return []
    if bos == "always":
        if tokenizer.bos_token_id is None:
            raise ValueError(f"the tokenizer of {name} has no BOS token; use --bos=auto or --bos=never.")
        return [tokenizer.bos_token_id]
    special = set(tokenizer.all_special_ids)
    prefix = []
    for i in tokenizer("a")["input_ids"]:  # a text of one plain token: what comes before it is the prefix
        if i not in special:
            break
        prefix.append(i)
    return prefix


def parameter_count(model):
    """Parameters of the model, each shared tensor (tied embeddings) counted once."""
    return sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
