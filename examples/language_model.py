"""Order effects in a language model: a small GPT-2 (Hugging Face, random init) trained on the
Python documentation that ships with every Python (``pydoc_data.topics``), then

1. the brackets of four training sequences pushed to the next-token log-probabilities of
   held-out sequences, checked against really swapping two SGD steps;
2. the order scores of 64 training sequences for the held-out loss, checked against the
   projected bracket matrix they summarise, and the top-scored sequence against real training.

Run:  python examples/language_model.py      (about a minute on 2 CPU cores; asserts what it
prints). Needs the optional extra: pip install -e '.[hf]'. Nothing is downloaded: the model is
built from a config and the text is part of the standard library.
"""

import math
import time
from pydoc_data.topics import topics

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

import perturbative as pt

torch.manual_seed(0)
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
start = time.perf_counter()

# --- data: characters of the Python documentation, sequences of 33 (32 next-token targets)
text = "\n".join(topics[k] for k in sorted(topics))
alphabet = sorted(set(text))
codes = torch.tensor([alphabet.index(c) for c in text])
length = 33
sequences = codes[: len(codes) // length * length].reshape(-1, length)
sequences = sequences[torch.randperm(len(sequences))]
train, heldout = sequences[:-64], sequences[-64:]
print(f"{len(text):,} characters, alphabet {len(alphabet)}, {len(train):,} training sequences")


def batch_of(rows: torch.Tensor) -> dict:
    """A keyword batch, passed to the model as model(**batch)."""
    return {"input_ids": rows, "labels": rows}


def next_token_loss(outputs, batch) -> torch.Tensor:
    """Mean next-token cross-entropy of one sequence (the model's dtype; transformers' own
    outputs.loss would do too, but computes in float32)."""
    return F.cross_entropy(outputs.logits[0, :-1], batch["labels"][0, 1:])


# --- a small GPT-2, trained as usual
config = GPT2Config(
    vocab_size=len(alphabet), n_positions=length, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0
)
model = GPT2LMHeadModel(config)
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
for _ in range(400):
    rows = train[torch.randint(len(train), (32,))]
    loss = model(**batch_of(rows)).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.eval()  # dropout off: brackets of a random network would be random
with torch.no_grad():
    heldout_loss = float(model(**batch_of(heldout)).loss)
print(
    f"held-out next-token loss after 400 steps: {heldout_loss:.3f} (uniform: "
    f"{math.log(len(alphabet)):.3f})"
)
assert heldout_loss < 0.75 * math.log(len(alphabet))

# Float64 copies for the checks, so that differences of two real trainings are far above
# rounding; Adam's state moves with the parameters it belongs to.
model = model.double()
params = dict(model.named_parameters())
xs = [batch_of(train[i : i + 1]) for i in range(4)]
test = batch_of(heldout[:8])

# --- 1. brackets of training sequences, pushed to held-out next-token log-probabilities
matrix = pt.bracket_matrix(model, next_token_loss, params, batch_of(train[:4]))
directions = pt.upper_pairs(matrix)  # the 6 brackets [v_i, v_j], i < j
lr = 1e-3
logit_shift = pt.output_shift(model, params, directions, test, lr=lr)  # (6, 8, 33, V)
with torch.no_grad():
    probs = model(**test).logits.softmax(-1)
# log p(token) moves by d logit(token) - sum_v p_v d logit_v
logp_shift = logit_shift - (probs * logit_shift).sum(-1, keepdim=True)
targets = test["input_ids"][:, 1:]
predicted = logp_shift[:, :, :-1].gather(-1, targets.expand(6, -1, -1)[..., None])[..., 0]
largest = predicted.abs().amax(dim=(1, 2))
print(
    "largest predicted shift of a held-out token's log-probability per pair, lr 1e-3: "
    + ", ".join(f"{v:.2e}" for v in largest.tolist())
)


def logp_after(order: list, step: float) -> torch.Tensor:
    """Held-out next-token log-probabilities after real SGD steps on ``order``."""
    model_copy = GPT2LMHeadModel(config).double().eval()
    model_copy.load_state_dict(model.state_dict())
    sgd = torch.optim.SGD(model_copy.parameters(), lr=step)
    for batch in order:
        sgd.zero_grad()
        next_token_loss(model_copy(**batch), batch).backward()
        sgd.step()
    with torch.no_grad():
        logp = model_copy(**test).logits.log_softmax(-1)[:, :-1]
    return logp.gather(-1, targets[..., None])[..., 0]


real = logp_after([xs[0], xs[1]], lr) - logp_after([xs[1], xs[0]], lr)
error = float((real - predicted[0]).norm() / real.norm())
print(f"pair (0, 1): real swapped SGD steps against lr^2 J [v_0, v_1]: relative error {error:.4f}")
assert error < 0.05

# --- 2. order scores of training sequences for the held-out loss
pool = batch_of(train[:64])
observable = pt.Observable.mean_loss(next_token_loss, batch_of(heldout[:16]))
u = observable.gradient(model, params)
scores = pt.order_scores(model, next_token_loss, params, pool, u)
M = pt.projected_bracket_matrix(model, next_token_loss, params, batch_of(train[:16]), u)
small = pt.order_scores(model, next_token_loss, params, batch_of(train[:16]), u)
gap = float((small - M.sum(1)).abs().max() / M.sum(1).abs().max())
print(
    f"order scores of 64 training sequences: |S| from {scores.abs().min():.2e} to "
    f"{scores.abs().max():.2e}; equal to the projected matrix's row sums to {gap:.1e}"
)
assert gap < 1e-10
top = int(scores.abs().argmax())
print(
    f"most order-sensitive training sequence: #{top}: {''.join(alphabet[c] for c in train[top])!r}"
)

# lr^2 S_x is the held-out loss change when x comes first rather than last among the others:
# check its sign on a pool of 4 (x and three others) with real SGD steps.
others = [batch_of(train[i : i + 1]) for i in range(64) if i != top][:3]
x = batch_of(train[top : top + 1])
quad = {"input_ids": torch.cat([b["input_ids"] for b in [x, *others]])}
quad["labels"] = quad["input_ids"]
s_quad = float(pt.order_scores(model, next_token_loss, params, quad, u)[0])
step = 2.5e-4
first = pt.brackets.values_along_steps(
    model,
    next_token_loss,
    torch.optim.SGD(model.parameters(), lr=step),
    [x, *others],
    observable.value,
    [4],
)[0]
last = pt.brackets.values_along_steps(
    model,
    next_token_loss,
    torch.optim.SGD(model.parameters(), lr=step),
    [*others, x],
    observable.value,
    [4],
)[0]
print(
    f"its score among 4: lr^2 S_x = {step**2 * s_quad:+.3e}; real held-out loss, x first minus "
    f"x last: {first - last:+.3e}"
)
assert abs(step**2 * s_quad - (first - last)) < 0.1 * abs(first - last)
print(f"took {time.perf_counter() - start:.0f} s")
