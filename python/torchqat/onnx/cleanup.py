"""Graph clean-up after export (graph walking only): one initializer per distinct Q/DQ scale, and one
Q/DQ pair where a shared quantizer reads the same tensor several times.

torch's exporter folds each quantizer call into its own scale initializer, so a quantizer shared
across a concat (torchqat.placement.share_scales) gives equal values under different names; after
this pass they are one initializer, which is what TensorRT's concat elimination and readers of
the graph expect.
"""
__all__ = ["clean", "bypass_constant_identities", "share_scale_initializers", "merge_duplicate_qdq",
           "drop_requantize"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _rename_inputs(graph, renames):
    if not renames:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]


def clean(model):
    """All passes, in order; returns the model (changed in place)."""
    bypass_constant_identities(model)
    share_scale_initializers(model)
    merge_duplicate_qdq(model)
    drop_requantize(model)
    return model


def bypass_constant_identities(model):
    """Readers of Identity(initializer) read the initializer itself (torch's exporter writes such Identity
    nodes for folded constants used twice; TensorRT wants Q/DQ scales as initializers)."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    renames, keep = {}, []
    for node in graph.node:
        if (node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in inits
                and node.output[0] not in outputs):
            renames[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    _rename_inputs(graph, renames)
    del graph.node[:]
    graph.node.extend(keep)
    return len(renames)


def share_scale_initializers(model):
    """Makes Q/DQ nodes whose scale (and zero point) initializers hold equal values read one initializer."""
    from onnx import numpy_helper

    graph = model.graph
    used_by_qdq = {n.input[i] for n in graph.node if n.op_type in _QDQ for i in (1, 2) if len(n.input) > i}
    other_uses = {name for n in graph.node if n.op_type not in _QDQ for name in n.input}
    other_uses |= {o.name for o in graph.output}
    first, renames = {}, {}
    for init in graph.initializer:
        if init.name not in used_by_qdq or init.name in other_uses:
            continue
        arr = numpy_helper.to_array(init)
        key = (init.data_type, tuple(init.dims), arr.tobytes())
        if key in first:
            renames[init.name] = first[key]
        else:
            first[key] = init.name
    _rename_inputs(graph, renames)
    keep = [init for init in graph.initializer if init.name not in renames]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return len(renames)


def _axis(node):
    for a in node.attribute:
        if a.name == "axis":
            return a.i
    return None


def merge_duplicate_qdq(model):
    """Q (then DQ) nodes with the same inputs and axis are computed once (graph nodes are in topological
    order, so one pass that renames as it goes suffices)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    zp_values = _constant_outputs(graph)
    seen, renames, keep = {}, {}, []
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        if node.op_type in _QDQ and len(node.output) == 1 and node.output[0] not in outputs:
            ins = tuple(zp_values.get(name, name) for name in node.input)
            key = (node.op_type, ins, _axis(node))
            if key in seen:
                renames[node.output[0]] = seen[key]
                continue
            seen[key] = node.output[0]
        keep.append(node)
    # Constant nodes whose outputs nobody reads any more (the merged zero points).
    used = {name for n in keep for name in n.input} | outputs
    keep = [n for n in keep if n.op_type != "Constant" or any(o in used for o in n.output)]
    removed = len(graph.node) - len(keep)
    del graph.node[:]
    graph.node.extend(keep)
    return removed


def _constant_outputs(graph):
    """{output name: a hashable key of its value} for Constant nodes (so equal zero points compare equal)."""
    from onnx import numpy_helper

    out = {}
    for n in graph.node:
        if n.op_type == "Constant" and len(n.output) == 1:
            for a in n.attribute:
                if a.name == "value":
                    arr = numpy_helper.to_array(a.t)
                    out[n.output[0]] = ("const", a.t.data_type, tuple(a.t.dims), arr.tobytes())
    return out


def drop_requantize(model):
    """Removes Q -> DQ pairs that read a DequantizeLinear with the same scale, zero point and axis: they
    give back the same values (a residual skip quantizer shared with the next layer's input quantizer
    quantizes that tensor twice in the model; TensorRT wants one Q/DQ)."""
    from onnx import numpy_helper

    graph = model.graph
    outputs = {o.name for o in graph.output}
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and len(n.output) == 1:
            for a in n.attribute:
                if a.name == "value":
                    values[n.output[0]] = numpy_helper.to_array(a.t)
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def params(node):
        ins = list(node.input[1:3])
        vals = [values.get(name) for name in ins]
        if any(v is None for v in vals) or len(vals) < 2:
            return None
        return vals, _axis(node)

    def same(a, b):
        return a is not None and b is not None and a[1] == b[1] and all(
            x.dtype == y.dtype and x.shape == y.shape and (x == y).all() for x, y in zip(a[0], b[0]))

    renames, drop = {}, set()
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.output[0] in outputs:
            continue
        dq1 = producer.get(q.input[0])
        if dq1 is None or dq1.op_type != "DequantizeLinear" or not same(params(dq1), params(q)):
            continue
        readers = consumers.get(q.output[0], [])
        if not readers or not all(r.op_type == "DequantizeLinear" and same(params(r), params(q))
                                  and r.output[0] not in outputs for r in readers):
            continue
        for r in readers:
            renames[r.output[0]] = dq1.output[0]
            drop.add(id(r))
        drop.add(id(q))
    if not drop:
        return 0
    keep = [n for n in graph.node if id(n) not in drop]
    _rename_inputs(graph, renames)
    used = {name for n in keep for name in n.input} | outputs | {i.name for i in graph.input}
    keep = [n for n in keep if n.op_type != "Constant" or any(o in used for o in n.output)]
    del graph.node[:]
    graph.node.extend(keep)
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return len(drop)
