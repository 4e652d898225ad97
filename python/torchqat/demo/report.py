"""The demo's one results table and its PNG figure."""
__all__ = ["format_table", "save_plot"]


def format_table(rows, title=None):
    """rows: list of (label, value str, delta str, note str) or None for a rule; returns the table text."""
    headers = ("step", "result", "vs FP32", "note")
    body = [r for r in rows if r is not None]
    widths = [max(len(headers[i]), *(len(r[i]) for r in body)) for i in range(4)]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells):
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            out.append(f" {c:>{w}} " if i in (1, 2) else f" {c:<{w}} ")
        return "|" + "|".join(out) + "|"

    lines = []
    if title:
        lines.append(title)
    lines += [sep, line(headers), sep.replace("-", "=")]
    for r in rows:
        lines.append(sep if r is None else line(r))
    lines.append(sep)
    return "\n".join(lines)


def save_plot(path, amax_by_method, accuracies, fp32_acc, title="torchqat on Fashion-MNIST", annotations=None):
    """Writes a PNG: activation amax per layer for each calibration method, and the accuracy bars.

    amax_by_method: {method: [(quantizer name, amax), ...]} (same names in each, model order).
    accuracies: [(label, accuracy %)].
    annotations: {method: [text per point]} written next to that method's points (auto's choices).
    """
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [1.35, 1]})
    names = None
    for method, entries in amax_by_method.items():
        if names is None:
            names = [n for n, _ in entries]
        ax1.plot(range(len(entries)), [a for _, a in entries], marker="o", ms=4, lw=1.2, label=method)
        for i, text in enumerate((annotations or {}).get(method, [])):
            ax1.annotate(text, (i, entries[i][1]), textcoords="offset points", xytext=(0, 6), ha="center",
                         fontsize=6, rotation=90)
    if names:
        ax1.set_xticks(range(len(names)))
        ax1.set_xticklabels([_short(n) for n in names], rotation=70, ha="right", fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylabel("activation amax (log scale)")
    ax1.set_title("input amax per quantizer, by calibration method")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)

    labels = [lab for lab, _ in accuracies]
    values = [v for _, v in accuracies]
    colors = ["#4c72b0" if lab.startswith("FP32") else "#dd8452" if "w4" in lab else "#55a868" for lab in labels]
    bars = ax2.barh(range(len(values)), values, color=colors)
    ax2.set_yticks(range(len(labels)))
    ax2.set_yticklabels(labels, fontsize=8)
    ax2.invert_yaxis()
    lo = min(values + [fp32_acc])
    ax2.set_xlim(max(0.0, lo - max(2.0, 0.15 * (100 - lo))), min(100.0, max(values + [fp32_acc]) + 1.0))
    ax2.axvline(fp32_acc, color="k", ls="--", lw=0.8)
    for b, v in zip(bars, values):
        ax2.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:.2f}", va="center", fontsize=8)
    ax2.set_xlabel("test accuracy (%)")
    ax2.set_title("accuracy (dashed: FP32)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(name):
    return name.replace("._input_quantizer", "").replace("._input0_quantizer", "").replace("_quantizer", "")
