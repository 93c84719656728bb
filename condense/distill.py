"""
Knowledge distillation: a student trained towards a frozen teacher's next-token distribution, and
optionally towards the teacher's token geometry (definitions: docs/condensation.md, section 7). In train.py:

    loss = (1 - alpha) * cross_entropy + alpha * kd + distill_hidden_weight * geometry (+ dispersion, as ever)
    kd = T^2 * KL(p_teacher || p_student),  p = softmax(logits / T) over the data set's real vocabulary

with alpha = distill_weight and T = distill_temperature. The KL is the forward one (the teacher's distribution
first, as in Hinton et al. 2015), summed over the vocabulary and averaged over the tokens.

    teacher = load_teacher("out/tiny_teacher", meta, block_size, device)  # an out_dir, or a HF causal LM
    kd, geometry = distill_terms(teacher, x, logits, hidden[-1], T)  # hidden None: no geometry term

The teacher is either a train.py out_dir (its ckpt.pt) or a Hugging Face causal LM (name, NAME@REVISION or
folder) whose tokenizer is the student's: load_teacher checks that, the vocabulary and the context length, and
says in one sentence (a ValueError) what is wrong.
"""

import hashlib
import math
import os

import torch
import torch.nn.functional as F

from condense.checkpoint import load_checkpoint, model_from_checkpoint
from condensation import model_limits
from data.common import data_fingerprint

# Logits per chunk of the KL: a (B, T, V) batch is taken a few hundred tokens at a time, so its fp32
# softmaxes never exist whole (GPT-2's vocabulary at small_base's batch: 8,192 x 50,257 logits, 1.6 GB per
# fp32 copy). 2**24 logits are 64 MiB per fp32 buffer; a char-level batch (2,048 x 84) is one chunk.
CHUNK_LOGITS = 2**24


# -----------------------------------------------------------------------------
# the two terms


def upcast(z):
    """z in at least fp32: softmaxes of bf16 or fp16 logits lose digits that the KL needs; fp64 stays fp64."""
    return z.float() if z.element_size() < 4 else z


class ForwardKL(torch.autograd.Function):
    """kd = T^2 / N * sum_n sum_v p_t[n, v] (log p_t[n, v] - log p_s[n, v]),  p = softmax(z[n, :V] / T),

    over the N token positions of the batch (B sequences x their length) and the first V logits of each (the
    real vocabulary: our GPT pads its output to a multiple of 64, and those extra logits belong to no token).
    The gradient with respect to the student's logits is

        d kd / d z_s[n, v] = T^2 / N * (1 / T) (p_s[n, v] - p_t[n, v]) = T / N * (p_s[n, v] - p_t[n, v])

    for v < V and 0 for the padding. It is computed here, chunk by chunk, during the forward pass, so what is
    kept for backward is one tensor the size of the student's logits, in their dtype, instead of autograd's
    fp32 softmaxes of both models. (Stored without the 1/N, which underflows fp16.)"""

    @staticmethod
    def forward(ctx, student, teacher, vocab_size, temperature):
        s, t = (z.reshape(-1, z.size(-1)) for z in (student, teacher))  # (N, V_s), (N, V_t): views
        n, T = s.size(0), temperature
        grad = torch.zeros_like(s)  # the padding columns keep their 0
        total = torch.zeros((), dtype=torch.promote_types(s.dtype, torch.float32), device=s.device)
        rows = max(1, CHUNK_LOGITS // vocab_size)
        for i in range(0, n, rows):
            log_ps = F.log_softmax(upcast(s[i:i + rows, :vocab_size]) / T, dim=-1)
            log_pt = F.log_softmax(upcast(t[i:i + rows, :vocab_size]) / T, dim=-1)
            p_t = log_pt.exp()
            total += (p_t * (log_pt - log_ps)).sum()
            grad[i:i + rows, :vocab_size] = T * (log_ps.exp() - p_t)
        ctx.save_for_backward(grad)
        ctx.n, ctx.shape = n, student.shape
        return T * T * total / n

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return (grad * (g / ctx.n)).view(ctx.shape), None, None, None


def kd_loss(student_logits, teacher_logits, vocab_size, temperature):
    """T^2 * KL(p_teacher || p_student), summed over the first vocab_size logits, averaged over the tokens.
    The logits are (..., V) with V >= vocab_size on both sides (the widths may differ: padding is cut off);
    the teacher's get no gradient."""
    return ForwardKL.apply(student_logits, teacher_logits.detach(), vocab_size, float(temperature))


def geometry_loss(student_hidden, teacher_hidden):
    """mean over b and i != j of (c_s[b, i, j] - c_t[b, i, j])^2, with c[b] = U U^T the token-token cosines of
    sequence b (U its rows z_i / max(||z_i||, 1e-8), as the measurement computes them, docs/condensation.md
    section 2) at the student's and the teacher's last hidden states, (B, T, C_s) and (B, T, C_t). Cosines
    do not depend on the width, so the two models need not match. In fp32 whatever the autocast: the term
    compares numbers of a few hundredths."""
    with torch.autocast(student_hidden.device.type, enabled=False):
        c_s, c_t = (F.normalize(h.float(), dim=-1, eps=1e-8) for h in (student_hidden, teacher_hidden))
        diff = c_s @ c_s.transpose(1, 2) - c_t @ c_t.transpose(1, 2)  # (B, T, T)
        B, T, _ = diff.shape
        diagonal = torch.eye(T, dtype=torch.bool, device=diff.device)  # 1 - 1 there, on both sides
        return diff.square().masked_fill(diagonal, 0).sum() / (B * T * (T - 1))


def distill_terms(teacher, x, logits, hidden, temperature):
    """(kd, geometry) for one micro-batch: the student saw tokens x (B, T) and gave logits (B, T, V) and its
    last hidden state hidden (B, T, C), or None to leave the geometry term out (a zero tensor then, and the
    teacher's hidden states are not asked for); the teacher sees the same tokens. Run it under the student's
    autocast."""
    teacher_logits, teacher_hidden = teacher(x, hidden=hidden is not None)
    kd = kd_loss(logits, teacher_logits, teacher.vocab_size, temperature)
    geo = geometry_loss(hidden, teacher_hidden) if hidden is not None else torch.zeros((), device=kd.device)
    return kd, geo


# -----------------------------------------------------------------------------
# the teacher


class Teacher:
    """A frozen model in eval mode: teacher(x) gives its logits for tokens x, and with hidden=True its last
    hidden state (after the final norm, docs/condensation.md section 1), without gradients. vocab_size is
    the student's real vocabulary, the logits the KL compares. fingerprint identifies the weights (their
    count and a sha256 of their bytes, the same on any machine): a checkpoint stores it, and a resume with
    another teacher, retrained into the same folder, refuses."""

    def __init__(self, model, hf, vocab_size):
        self.model, self.hf, self.vocab_size = model.eval().requires_grad_(False), hf, vocab_size
        params = list({p.data_ptr(): p for p in model.parameters()}.values())  # tied tensors once
        digest = hashlib.sha256()
        for p in params:
            digest.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        self.fingerprint = {"parameters": sum(p.numel() for p in params), "sha256": digest.hexdigest()}

    @torch.no_grad()
    def __call__(self, x, hidden=False):
        if self.hf:
            out = self.model(input_ids=x, output_hidden_states=hidden, use_cache=False)
            return out.logits, out.hidden_states[-1] if hidden else None
        if hidden:
            logits, _, states = self.model(x, return_hidden=True)
            return logits, states[-1]
        return self.model(x)[0], None


# encoded by the teacher's tokenizer and by GPT-2's: the hard cases of byte-level BPE (spaces, digits,
# contractions, accents, other scripts, a newline run)
SAMPLE = "Hello world! It's 3.14, naïve café — 東京\n\n  spaces and\ttabs; O'Neill's 1,000th"


def looks_local(spec):
    """A path rather than a hub name: absolute, starting with '.', or in a folder that exists here (out/)."""
    return os.path.isabs(spec) or spec.startswith(".") or ("/" in spec and os.path.isdir(spec.split("/")[0]))


def load_teacher(spec, meta, block_size, device, compile=False):
    """The Teacher that distill_from=spec names, for a student on the data set of meta.json `meta` with
    windows of block_size tokens, on device, its model torch.compile'd if compile. Raises ValueError with one
    sentence: the teacher does not exist, has another tokenizer or a smaller vocabulary, or a context shorter
    than block_size. (A resume checks that it is the run's own: condense/train_utils.check_resume.)"""
    where = f"distill_from={spec!r}"
    path = os.path.join(spec, "ckpt.pt") if os.path.isdir(spec) else spec
    # RNG fork: building the teacher draws initial weights from the global generator, which must not change
    # the student's initialisation or dropout stream (the same seed gives the same student with or without)
    with torch.random.fork_rng(devices=[]):
        if os.path.isfile(path) and path.endswith(".pt"):
            teacher = our_teacher(where, path, meta, block_size)
        elif not os.path.exists(spec) and (looks_local(spec) or meta["tokenizer"] != "gpt2"):
            raise ValueError(f"{where} does not exist: give the out_dir of a train.py run (holding ckpt.pt), "
                             "or for a GPT-2-BPE data set a Hugging Face model name or folder.")
        elif meta["tokenizer"] != "gpt2":
            raise ValueError(f"{where} holds no ckpt.pt, and only a GPT-2-BPE data set can have a Hugging "
                             f"Face teacher, while this one is {meta['tokenizer']}-level (another "
                             "tokenizer); give the out_dir of a train.py run on the same data set.")
        else:
            teacher = hf_teacher(where, spec, meta, block_size, device)
    teacher.model.to(device)
    if compile:
        teacher.model = torch.compile(teacher.model)
    return teacher


def our_teacher(where, path, meta, block_size):
    """A train.py checkpoint as a Teacher: the same tokenizer means the same prepared data set (its data
    fingerprint), or GPT-2 BPE on both sides, where every data set has the same 50,257 tokens."""
    try:
        ckpt = load_checkpoint(path)
    except SystemExit as e:  # load_checkpoint says what is wrong with the file
        raise ValueError(f"{where}: {e}") from None
    theirs, ours = ckpt.get("data"), data_fingerprint(meta)
    same = theirs == ours or (theirs or {}).get("tokenizer") == ours["tokenizer"] == "gpt2"
    if not same:  # a char-level vocabulary is its data set's own list of characters
        what = f"{theirs['tokenizer']}, {theirs['vocab_size']} tokens" if theirs else "not recorded"
        raise ValueError(f"{where} was trained with another tokenizer: its data set ({what}) is not this "
                         f"run's ({ours['tokenizer']}, {ours['vocab_size']} tokens, meta.json differs); "
                         "distil from a teacher trained on the same prepared data set.")
    args = ckpt["model_args"]
    if args["vocab_size"] < meta["vocab_size"]:
        raise ValueError(f"{where} has a vocabulary of {args['vocab_size']}, smaller than the data set's "
                         f"{meta['vocab_size']}; distil from a teacher with the student's tokenizer.")
    check_context(where, args["block_size"], block_size)
    model = model_from_checkpoint({**ckpt, "model_args": {**args, "dropout": 0.0}})
    return Teacher(model, hf=False, vocab_size=meta["vocab_size"])


def hf_teacher(where, spec, meta, block_size, device):
    """A Hugging Face causal LM as a Teacher: only for GPT-2-BPE data sets, and only if its tokenizer encodes
    as GPT-2's does (checked on SAMPLE) and it has at least GPT-2's 50,257 output logits."""
    from condense.hf_models import hf_encode, load_hf
    from data.common import gpt2_encoding
    try:
        model, tokenizer = load_hf(spec, device, "float32")
    except ValueError as e:  # not there, not reachable, not a causal LM, ...: one sentence from hf_models
        raise ValueError(f"{where}: {str(e).rstrip('.')}.") from None
    if hf_encode(tokenizer)(SAMPLE) != gpt2_encoding().encode_ordinary(SAMPLE):
        raise ValueError(f"{where} has another tokenizer than GPT-2's (it encodes a sample text "
                         "differently); distil from a model with GPT-2's tokenizer or a train.py out_dir.")
    head = model.get_output_embeddings()
    vocab = head.weight.shape[0] if head is not None else model.config.vocab_size
    if vocab < meta["vocab_size"]:
        raise ValueError(f"{where} has a vocabulary of {vocab}, smaller than GPT-2's {meta['vocab_size']}; "
                         "distil from a model with GPT-2's whole vocabulary.")
    context = model_limits(model)[0]
    check_context(where, context if math.isfinite(context) else block_size, block_size)
    return Teacher(model, hf=True, vocab_size=meta["vocab_size"])


def check_context(where, context, block_size):
    if context < block_size:
        raise ValueError(f"{where} reads at most {context} tokens, fewer than block_size={block_size}; set "
                         f"block_size to {context} or less, or distil from a teacher with a longer context.")
