"""Score-based black-box attacks: random search with a query budget.

- ``square_linf``: Square Attack (Andriushchenko et al. 2020), Linf, as ``SquareAttack``
  of fra31/auto-attack (``autoattack/square.py``) runs it.
- ``sparse_rs``: Sparse-RS (Croce et al. 2022), L0: at most ``k`` pixels changed, as
  ``RSAttack(norm='L0')`` of fra31/sparse-rs (``rs_attacks.py``) runs it.

Both only read the model's (masked) logits, one forward pass per image per query,
minimise the margin ``z_y - max_{j != y} z_j``, accept a candidate only when it lowers the
margin (strictly, as the references do), and stop attacking an image once it is
misclassified; per image the output is the clean image unless the search found a point of
lower margin. They return ``(x_adv [B, C, H, W] float in [0, 1], queries int64 [B])``:
``queries`` counts the forward passes spent on each image, the initial point's included
(0 for images misclassified clean; the whole budget for images never fooled), the clean
pass not included. Random draws follow the references' order draw for draw (a CPU
``generator`` seeded like the reference's global seed gives its numbers).
"""

from __future__ import annotations

import math

import torch

from ...core.errors import ConfigError
from .common import ClassSubset, Classifier, check_eps, check_positive_int, logits_of, margin, prepare_inputs, rand

# Square's ``p_selection``: (last iteration on a 10,000-query scale, divisor of p_init)
_SQUARE_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                    (8000, 256))
# Sparse-RS's ``p_selection`` for L0 (``alpha_i``); iteration 0 keeps p_init
_SPARSE_RS_SCHEDULE = ((0, 1), (50, 2), (200, 4), (500, 5), (1000, 6), (2000, 8), (4000, 10), (6000, 12),
                       (8000, 15))


def _schedule(table: tuple[tuple[int, int], ...], last: int, i: int, total: int, p_init: float) -> float:
    t = int(i / total * 10000)
    for bound, div in table:
        if t <= bound:
            return p_init / div
    return p_init / last


def fraction_schedule(i: int, queries: int, p_init: float) -> float:
    """Square's fraction of the image changed at iteration ``i`` of ``queries`` (``p_selection``
    of auto-attack's ``square.py``): with ``t = int(i / queries * 10000)``, ``p_init`` for
    t <= 10, then divided by 2, 4, 8, ..., 256 for t in (10, 50], (50, 200], (200, 500],
    (500, 1000], (1000, 2000], (2000, 4000], (4000, 6000], (6000, 8000], and by 512 above."""
    return _schedule(_SQUARE_SCHEDULE, 512, i, queries, p_init)


def sparse_rs_schedule(i: int, queries: int, p_init: float) -> float:
    """Sparse-RS's fraction ``alpha_i`` of the ``k`` pixels moved at iteration ``i`` of
    ``queries`` (``p_selection`` of ``rs_attacks.py``, L0): with ``t = int(i / queries * 10000)``,
    ``p_init`` for t = 0, then divided by 2, 4, 5, 6, 8, 10, 12, 15 for t in (0, 50], (50, 200],
    (200, 500], (500, 1000], (1000, 2000], (2000, 4000], (4000, 6000], (6000, 8000], by 20 above."""
    return _schedule(_SPARSE_RS_SCHEDULE, 20, i, queries, p_init)


def _margins(model: Classifier, x: torch.Tensor, y: torch.Tensor, class_subset: ClassSubset) -> torch.Tensor:
    with torch.no_grad():
        return margin(logits_of(model, x, class_subset), y)


def _check_p(name: str, p_init: float) -> float:
    if not 0 < p_init <= 1:
        raise ConfigError(f"{name}.p_init", f"must lie in (0, 1], got {p_init!r}")
    return float(p_init)


def _sign(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """The references' ``random_choice``: ``sign(2 u - 1)``, u uniform in [0, 1)."""
    return torch.sign(2 * rand(shape, generator, device) - 1)


def _randint(high: int, generator: torch.Generator | None, device: torch.device) -> int:
    """The references' ``random_int(0, high)``: ``int(high * u)``, one u uniform in [0, 1)."""
    return int((high * rand((1,), generator, device)).long())


def square_linf(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.1, queries: int = 1000,
                p_init: float = 0.8, class_subset: ClassSubset = None, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Square Attack, Linf (Andriushchenko et al. 2020), as auto-attack's ``SquareAttack``
    (``attack_single_run``, norm 'Linf', loss 'margin') computes it.

    Starts from vertical stripes: ``clamp(x + eps * s, 0, 1)`` with one random sign per
    channel and column. Each later query draws one square window of side
    ``min(max(round(sqrt(p * H * W)), 1), min(H, W))`` at ``(int((H - side) u), int((W - side) u'))``
    and one random sign per channel, **shared by every image of the batch still attacked**
    (as in the reference), adds ``2 eps * sign`` there to the current point, projects onto
    the ball and [0, 1], and keeps the candidate if its margin is lower (strictly) or it
    misclassifies. ``p`` follows ``fraction_schedule`` from ``p_init`` (0.8, AutoAttack's).
    ``queries`` counts the initial point: ``queries = Q`` is the reference's ``n_queries = Q - 1``.
    """
    eps = check_eps("square_linf", eps)
    queries = check_positive_int("square_linf.queries", queries)
    p_init = _check_p("square_linf", p_init)
    x, y = prepare_inputs(model, x, y)
    b, c, h, w = x.shape
    dev = x.device
    used = torch.zeros(b, dtype=torch.int64, device=dev)
    m_clean = _margins(model, x, y, class_subset)
    idx = torch.nonzero(m_clean > 0).flatten()
    x_adv = x.clone()
    if len(idx) == 0 or eps == 0:
        return x_adv, used
    x0, yy = x[idx], y[idx]
    lo, hi = x0 - eps, x0 + eps
    x_best = torch.clamp(x0 + eps * _sign((len(idx), c, 1, w), generator, dev), 0.0, 1.0)
    m_best = _margins(model, x_best, yy, class_subset)
    used[idx] += 1
    iterations = queries - 1
    for i in range(iterations):
        active = torch.nonzero(m_best > 0).flatten()
        if len(active) == 0:
            break
        p = fraction_schedule(i, iterations, p_init)
        side = min(max(int(round(math.sqrt(p * h * w))), 1), min(h, w))
        top, left = _randint(h - side, generator, dev), _randint(w - side, generator, dev)
        step = torch.zeros(c, h, w, device=dev)
        step[:, top:top + side, left:left + side] = 2.0 * eps * _sign((c, 1, 1), generator, dev)
        x_new = torch.clamp(torch.min(torch.max(x_best[active] + step, lo[active]), hi[active]), 0.0, 1.0)
        m_new = _margins(model, x_new, yy[active], class_subset)
        used[idx[active]] += 1
        accept = (m_new < m_best[active]) | (m_new <= 0)
        x_best[active[accept]] = x_new[accept]
        m_best[active[accept]] = m_new[accept]
    better = m_best < m_clean[idx]  # elsewhere the clean image stays the lowest-margin point
    x_adv[idx[better]] = x_best[better]
    return x_adv, used


def _colours_unlike(old: torch.Tensor, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """For each image of ``old`` [n, C, 1] (the colour at its new pixel), a random corner colour
    that differs from it, consuming the random stream as the reference's loop does: image
    after image, ``clamp(sign(2u - 1), 0, 1)`` redrawn until it differs.

    The draws are made in one batch (with spares), the images scanned in order to find how
    many the reference consumes, and the generator rewound and advanced by exactly that many.
    """
    n, c = old.shape[0], old.shape[1]
    gen = generator if generator is not None else torch.default_generator
    state = gen.get_state()
    wanted = old.flatten(1).tolist()
    spare = max(n, 8)
    while True:
        stream = _sign((n + spare, c, 1), generator, device).clamp(0.0, 1.0).flatten(1).tolist()
        picks, at = [], 0
        for colour in wanted:
            while at < len(stream) and stream[at] == colour:
                at += 1
            if at == len(stream):
                break
            picks.append(at)
            at += 1
        gen.set_state(state)
        if len(picks) == n:
            break
        spare *= 2
    drawn = _sign((at, c, 1), generator, device).clamp(0.0, 1.0)
    return drawn[torch.tensor(picks, dtype=torch.int64, device=device)]


def sparse_rs(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, k: int = 10, queries: int = 1000,
              p_init: float = 0.3, class_subset: ClassSubset = None, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse-RS, L0 (Croce et al. 2022), as ``RSAttack(norm='L0', loss='margin')`` of
    fra31/sparse-rs computes it: change at most ``k`` pixels (a pixel is all channels at
    one location) to corners of the colour cube ({0, 1} per channel).

    Starts, per image, from ``k`` pixels drawn by ``randperm`` with colours
    ``clamp(sign(2u - 1), 0, 1)``. Each later query moves ``max(int(alpha_i * k), 1)`` of them
    (``alpha_i`` from ``sparse_rs_schedule``, ``p_init`` 0.3 as the paper's L0 attack): the
    slots to move and the unperturbed slots to fill are one ``randperm`` draw each, shared by
    the batch (each image keeps its own lists of perturbed and unperturbed locations), the
    moved pixels get back their clean values and the new ones fresh random colours (for a
    single pixel, a colour different from the one there, redrawn until it differs, image by
    image, as the reference does: ``_colours_unlike``). The candidate is
    kept if its margin is lower (strictly). ``queries`` counts the initial point, as the
    reference's ``n_queries`` does.
    """
    k = check_positive_int("sparse_rs.k", k)
    queries = check_positive_int("sparse_rs.queries", queries)
    p_init = _check_p("sparse_rs", p_init)
    x, y = prepare_inputs(model, x, y)
    b, c, h, w = x.shape
    hw = h * w
    if k >= hw:
        raise ConfigError("sparse_rs.k", f"must be below the {hw} pixels of a {h}x{w} image, got {k}")
    dev = x.device
    used = torch.zeros(b, dtype=torch.int64, device=dev)
    m_clean = _margins(model, x, y, class_subset)
    idx = torch.nonzero(m_clean > 0).flatten()
    x_adv = x.clone()
    if len(idx) == 0:
        return x_adv, used
    gen_device = generator.device if generator is not None else torch.device("cpu")

    def randperm(n: int) -> torch.Tensor:
        return torch.randperm(n, generator=generator, device=gen_device).to(dev)

    def colours(shape: tuple[int, ...]) -> torch.Tensor:
        return _sign(shape, generator, dev).clamp(0.0, 1.0)

    x0, yy = x[idx].flatten(2), y[idx]  # [n, C, HW]
    n = len(idx)
    x_best = x0.clone()
    on = torch.empty(n, k, dtype=torch.int64, device=dev)  # perturbed locations per image
    off = torch.empty(n, hw - k, dtype=torch.int64, device=dev)  # the others
    for row in range(n):  # the reference draws image by image: one permutation, then the colours
        perm = randperm(hw)
        on[row], off[row] = perm[:k], perm[k:]
        x_best[row][:, on[row]] = colours((c, k))
    m_best = _margins(model, x_best.view(n, c, h, w), yy, class_subset)
    used[idx] += 1
    for i in range(1, queries):
        active = torch.nonzero(m_best > 0).flatten()
        if len(active) == 0:
            break
        a = len(active)
        moves = min(max(int(sparse_rs_schedule(i, queries, p_init) * k), 1), hw - k)
        slot_on, slot_off = randperm(k)[:moves], randperm(hw - k)[:moves]
        on_a, off_a = on[active], off[active]
        leave, enter = on_a[:, slot_on], off_a[:, slot_off]  # [a, moves] locations
        x_new = x_best[active].clone()
        x_new.scatter_(2, leave[:, None, :].expand(-1, c, -1), x0[active].gather(2, leave[:, None, :].expand(-1, c, -1)))
        enter_c = enter[:, None, :].expand(-1, c, -1)
        if moves > 1:
            fresh = colours((a, c, moves))
        else:
            fresh = _colours_unlike(x_new.gather(2, enter_c), generator, dev)
        x_new.scatter_(2, enter_c, fresh)
        m_new = _margins(model, x_new.view(a, c, h, w), yy[active], class_subset)
        used[idx[active]] += 1
        accept = m_new < m_best[active]
        if accept.any():
            rows = active[accept]
            x_best[rows], m_best[rows] = x_new[accept], m_new[accept]
            new_on, new_off = on_a[accept], off_a[accept]
            new_on[:, slot_on], new_off[:, slot_off] = off_a[accept][:, slot_off], on_a[accept][:, slot_on]
            on[rows], off[rows] = new_on, new_off
    better = m_best < m_clean[idx]  # elsewhere the clean image stays the lowest-margin point
    x_adv[idx[better]] = x_best[better].view(-1, c, h, w)
    return x_adv, used
