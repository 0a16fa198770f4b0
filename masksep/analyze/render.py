"""analysis.json as words and pictures: summary.md (renderable again from
analysis.json alone) and one three-panel PNG per checkpoint."""

from __future__ import annotations

import io
from typing import Any

from masksep import formats

VIEWS_TEXT = """\
Every number is set against the same head at initialisation, rebuilt from the
checkpoint's seed (exactly how its training started), on the same test items.

- **Weight view** (follows the paper's argument). Li, Hu & Luo read a deep
  head's last hidden layer as P = width overseparated outputs and its output
  layer as their grouping into the C sources. Read that way, each hidden unit
  sends a *share* of its outgoing weight energy (the sum of squares of its
  output weights for that source's N mask rows) to each source. Reported: the
  share's normalised entropy (0 = the unit serves one source, 1 = all sources
  evenly) and the fraction of units whose largest share is above the threshold.
  *Chance* and *p* are masksep's own: the same statistics with the source labels
  permuted independently in every frequency bin (sources are exchangeable under
  PIT, so a head that does not group is one of those copies); p is one-sided
  (lower entropy than chance). For an og head with learned grouping the shares
  are its grouping matrix, which starts grouped by design (0.9 to source p mod C).
- **Function view** (the paper's claim, masksep's procedure). If a deep head is
  an efficient approximation of overseparation-grouping, an og head with
  P = width shallow masks should reproduce it. masksep fits its own og head
  (P = width, learned grouping, the same mask activation, no gate) to the deep
  head's masks from the head's own input features, on half of the test items,
  and scores it on the other half: mask MSE relative to the variance of the
  deep head's masks (*rel MSE*: 0 = exact, 1 = no better than the mean mask),
  and the SI-SNRi of the separator with the fitted head in place. The fit
  starts at a least-squares shallow head (P = C, also reported as the
  reference): the og head's extra outputs start nearly silent and the C that
  carry the shallow fit are refitted to what the silent ones leave. Adam then
  refines it on three quarters of the fit frames for a small fixed budget
  (below); the held-back quarter picks the best of the start and four
  snapshots. So the og fit's rel MSE is an upper bound on how close an og
  head of P = width can come, not the best possible fit; `--fit-steps` buys
  a tighter one.
- **Ablation view** (masksep's own). On the test items, silence (set to 0) the
  hidden units whose largest share goes to source c and measure the SI-SNR
  change of every output against the reference the intact head was matched
  to. *Selectivity* = change of the other outputs minus change of output c,
  averaged over c: > 0 when a source's units serve mainly that source. The
  control silences random sets of as many units.
- **Assignment view** (masksep's own; og heads with oracle grouping). The
  oracle groups the P outputs against the references of each mixture, so there
  is no learned grouping to read. Read instead: how consistently the oracle
  puts two outputs in one group over the test items (pair agreement, 1 = the
  same partition on every item), against the same with each item's assignment
  shuffled over the outputs (chance).
"""


_fmt, _p = formats.text, formats.p_value  # masksep/formats.py


def head_label(entry: dict[str, Any]) -> str:
    h = entry["head"]
    if h["head"] == "og":
        return f"og P{h['oversep']} {h['grouping']}" + (f" d{h['depth']}" if h["depth"] > 1 else "")
    return f"deep d{h['depth']} w{h['width']}"


def _settings_text(analysis: dict[str, Any]) -> str:
    s = analysis["settings"]
    return (f"Thresholds and budgets: a unit serves mainly one source when its largest share "
            f"is above **{s['share_threshold']}**; chance from **{s['permutations']}** label "
            f"permutations; ablation control: **{s['random_sets']}** random unit sets per source; "
            f"og fit: **{s['fit_steps']}** Adam steps of **{s['fit_frames']}** random frames "
            f"(lr {s['fit_lr']}), the best snapshot chosen on {s['check_frames']} held-back fit frames; "
            f"random draws seeded with {s['seed']}.")


_table = formats.table


def summary_markdown(analysis: dict[str, Any], rerendered: bool = False) -> str:
    from masksep.analyze.study import study_analysis_section

    entries = analysis["entries"]
    lines = ["# Inside the mask heads: masksep analyze", ""]
    datas = sorted({str(e.get("data")) for e in entries})
    items = sorted({e.get("items") for e in entries})
    n = len(entries)
    source = analysis["source"]
    if source == "..":
        source = "The sweep folder (`..`)"
    lines.append(f"{source}: {n} checkpoint{'s' * (n != 1)} analysed on "
                 f"{', '.join(datas)} test items ({', '.join(map(str, items))} per checkpoint), "
                 f"{analysis['threads']} torch thread(s), {analysis['seconds']} s in all "
                 f"({analysis['seconds'] / max(n, 1):.1f} s per checkpoint).")
    if rerendered:
        lines += ["", "*Rendered again from analysis.json: the checkpoints are not here (results "
                  "folders never hold them), so the numbers and figures are those of the run "
                  "that wrote analysis.json.*"]
    lines += ["", "## What each view asks, and whose it is", "", VIEWS_TEXT.rstrip(), "",
              _settings_text(analysis), ""]

    if n >= 2:
        lines += [study_analysis_section(analysis), ""]

    for section in (weight_section, ablation_section, function_section, assignment_section):
        lines += section(entries)

    not_applicable = sorted({f"{head_label(e)}: {view} view not applicable ({e[view]['reason']})"
                             for e in entries for view in ("weight", "ablation", "function")
                             if not e[view].get("applicable")})
    if not_applicable:
        lines += ["## Not applicable", ""] + [f"- {line}" for line in not_applicable] + [""]
    if analysis.get("left_out"):
        lines += ["## Left out", ""] + [f"- {s['name']}: {s['reason']}" for s in analysis["left_out"]] + [""]
    lines += ["## Figures", ""] + [f"![{e['name']}]({e['figure']})" for e in entries]
    return "\n".join(lines) + "\n"


def weight_section(entries: list[dict[str, Any]]) -> list[str]:
    """The weight view's table: each hidden unit's share of its output weight energy per source."""
    weight = [e for e in entries if e["weight"].get("applicable")]
    if not weight:
        return []
    lines = ["## Weight view", ""]
    rows = []
    for e in weight:
        t, i = e["weight"]["trained"], e["weight"]["init"]
        rows.append([e["name"], head_label(e), _fmt(e.get("seed")),
                     f"{_fmt(t['mean_entropy'])} / {_fmt(i['mean_entropy'])} / "
                     f"{_fmt(t.get('mean_entropy_chance'))}",
                     f"{_fmt(t['fraction_dominant'], 2)} / {_fmt(i['fraction_dominant'], 2)}",
                     _fmt(t.get("fraction_dominant_chance"), 2), _p(t.get("p_value")),
                     _p(i.get("p_value")),
                     " / ".join(map(str, t["units_per_source"]))])
    lines += _table(["checkpoint", "head", "seed", "share entropy trained / init / chance",
                     "fraction dominant trained / init", "chance", "p trained", "p init",
                     "units per source"], rows) + [""]
    return lines


def ablation_section(entries: list[dict[str, Any]]) -> list[str]:
    """The ablation view's table: silencing a source's units, against random units."""
    ablation = [e for e in entries if e["ablation"].get("applicable")]
    if not ablation:
        return []
    lines = ["## Ablation view", "", "SI-SNR changes in dB, mean over sources and test items.", ""]
    rows = []
    for e in ablation:
        t, i = e["ablation"]["trained"], e["ablation"]["init"]
        own = [t["delta_db"][c][c] for c in range(len(t["delta_db"]))]
        rows.append([e["name"], head_label(e), _fmt(e.get("seed")),
                     f"{_fmt(t['selectivity_db'], 2)} / {_fmt(t['random_selectivity_db'], 2)}",
                     f"{_fmt(i['selectivity_db'], 2)} / {_fmt(i['random_selectivity_db'], 2)}",
                     _fmt(sum(own) / len(own), 2),
                     " / ".join(map(str, t["group_sizes"]))])
    lines += _table(["checkpoint", "head", "seed", "selectivity trained: own units / random",
                     "selectivity init: own / random", "own output's change (trained)",
                     "units silenced per source"], rows) + [""]
    return lines


def function_section(entries: list[dict[str, Any]]) -> list[str]:
    """The function view's table: how close a fitted og head (and a shallow one) comes."""
    function = [e for e in entries if e["function"].get("applicable")]
    if not function:
        return []
    lines = ["## Function view", ""]
    rows = []
    for e in function:
        t, i = e["function"]["trained"], e["function"]["init"]
        rows.append([e["name"], head_label(e), _fmt(e.get("seed")),
                     f"{_fmt(t['og_rel_mse'])} / {_fmt(i['og_rel_mse'])}",
                     f"{_fmt(t['shallow_rel_mse'])} / {_fmt(i['shallow_rel_mse'])}",
                     f"{_fmt(t['head_si_snri'], 2)} / {_fmt(t['og_si_snri'], 2)} / "
                     f"{_fmt(t['shallow_si_snri'], 2)}"])
    lines += _table(["checkpoint", "head", "seed", "og fit rel MSE trained / init",
                     "shallow fit rel MSE trained / init",
                     "SI-SNRi (dB) head / og fit / shallow fit (trained)"], rows) + [""]
    return lines


def assignment_section(entries: list[dict[str, Any]]) -> list[str]:
    """The assignment view's table (oracle grouping): how consistently pairs share a group."""
    assignment = [e for e in entries if "assignment" in e]
    if not assignment:
        return []
    lines = ["## Assignment view (oracle grouping)", ""]
    rows = []
    for e in assignment:
        t, i = e["assignment"]["trained"], e["assignment"]["init"]
        rows.append([e["name"], head_label(e), _fmt(e.get("seed")),
                     f"{_fmt(t['pair_agreement'])} / {_fmt(i['pair_agreement'])}",
                     _fmt(t["pair_agreement_chance"]), _p(t["p_value"]), _p(i["p_value"])])
    lines += _table(["checkpoint", "head", "seed", "pair agreement trained / init", "chance",
                     "p trained", "p init"], rows) + [""]
    return lines


# --------------------------------------------------------------------------- figure


def figure(entry: dict[str, Any], threshold: float) -> bytes:
    """Weight (or assignment), ablation and function panels of one checkpoint, PNG."""
    from matplotlib.figure import Figure  # the object API: no pyplot state left behind

    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    colours = {"trained": "C0", "init": "C7"}

    ax = axes[0]
    if entry["weight"].get("applicable"):
        for side, style in (("init", "--"), ("trained", "-")):
            stats = entry["weight"][side]
            hist = stats["dominant_share_hist"]
            ax.stairs(hist["counts"], hist["edges"], color=colours[side], linewidth=2, linestyle=style,
                      label=f"{side}: entropy {stats['mean_entropy']:.2f}, "
                            f"{stats['fraction_dominant']:.0%} above")
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1)
        chance = entry["weight"]["trained"].get("fraction_dominant_chance")
        if chance is not None:
            ax.set_title(f"weight view (chance: {chance:.0%} above {threshold})", fontsize=10)
        else:
            ax.set_title(f"weight view: grouping matrix (threshold {threshold})", fontsize=10)
        ax.set_xlabel("largest share of a unit's weight energy")
        ax.set_ylabel("units")
        ax.legend(fontsize=7)
    elif "assignment" in entry:
        sides = ("trained", "init")
        values = [entry["assignment"][s]["pair_agreement"] for s in sides]
        ax.bar(sides, values, color=[colours[s] for s in sides])
        ax.axhline(entry["assignment"]["trained"]["pair_agreement_chance"], color="k",
                   linestyle="--", linewidth=1, label="chance")
        ax.set_ylim(0.5, 1.0)
        ax.set_ylabel("pair agreement of the oracle grouping")
        ax.set_title("assignment view (oracle grouping)", fontsize=10)
        ax.legend(fontsize=7)

    ax = axes[1]
    if entry["ablation"].get("applicable"):
        labels, own, other = [], [], []
        for side in ("trained", "init"):
            stats = entry["ablation"][side]
            for key, what in (("delta_db", "own units"), ("random_delta_db", "random")):
                delta = stats[key]
                n = len(delta)
                own.append(sum(delta[c][c] for c in range(n)) / n)
                other.append(sum(delta[c][k] for c in range(n) for k in range(n) if k != c)
                             / max(1, n * (n - 1)))
                labels.append(f"{side}\n{what}")
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], own, width=0.4, color="C3", label="output c")
        ax.bar([i + 0.2 for i in x], other, width=0.4, color="C2", label="other outputs")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_ylabel("SI-SNR change (dB)")
        ax.set_title("ablation: silence the units of source c", fontsize=10)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "ablation view:\nnot applicable", ha="center", va="center")
        ax.set_axis_off()

    ax = axes[2]
    if entry["function"].get("applicable"):
        sides = ("trained", "init")
        fits = (("og_rel_mse", "og fit (P = width)", "C1"), ("shallow_rel_mse", "shallow fit", "C4"))
        for j, (key, label, colour) in enumerate(fits):
            ax.bar([i + (j - 0.5) * 0.4 for i in range(2)],
                   [entry["function"][s][key] for s in sides], width=0.4, color=colour, label=label)
        ax.set_xticks([0, 1], sides)
        ax.set_ylabel("held-out mask MSE / mask variance")
        t = entry["function"]["trained"]
        ax.set_title(f"function view: SI-SNRi head {t['head_si_snri']:.1f}, og fit "
                     f"{t['og_si_snri']:.1f} dB", fontsize=10)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "function view:\nnot applicable", ha="center", va="center")
        ax.set_axis_off()

    fig.suptitle(f"{entry['name']}: {head_label(entry)}, seed {entry['seed']}", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
