"""torch.compile of the inference graph (the exportable module of a tiny DINO): one graph
(fullgraph) that keeps ``codetr::ms_deform_attn`` as an op (its fake kernel traces it), and the
same detections as eager."""
import torch
from torch._dynamo.backends.common import aot_autograd

from codetr.export import exportable
from support.dino import tiny_dino


def test_inference_compiles_to_one_graph_with_the_op():
    torch.set_num_threads(1)
    model = exportable(tiny_dino().eval())
    image = torch.randint(0, 256, (1, 3, 128, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(image)
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    # the output's length depends on the data (empty boxes are dropped): let dynamo capture it
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True), torch.no_grad():
        compiled = torch.compile(model, backend=aot_autograd(fw_compiler=record), fullgraph=True)
        got = compiled(image)
    assert len(graphs) == 1
    targets = [n.target for n in graphs[0].graph.nodes if n.op == "call_function"]
    # 1 encoder layer + 2 decoder layers, each one op call
    assert targets.count(torch.ops.codetr.ms_deform_attn.default) == 3
    assert torch.equal(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-4)
    torch.testing.assert_close(got[2], expected[2], rtol=0, atol=1e-6)
    torch._dynamo.reset()
