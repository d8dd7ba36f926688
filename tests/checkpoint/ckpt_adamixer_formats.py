"""State dicts of the official AdaMixer / DEQDet decoder layers (MCG-NJU AdaMixer and DEQDet:
``roi_head.bbox_head.i``) in the *source* format, written from their module definitions (not from
our converters): exact key names and shapes, values random (or on the meta device)."""
import torch


def official_head_shapes(c=256, heads=8, ffn=2048, groups=4, p_in=64, p_out=128, classes=80, dii=True):
    """One ``roi_head.bbox_head.i`` of the official releases, written from their module
    definitions: mmcv MultiheadAttention / FFN, DIIHead's DynamicConv (feat 64, 7 x 7 RoI; DEQDet
    only), AdaMixerHead's heads (1 cls fc, 1 reg fc) and sampling/mixing operators."""
    g_in = g_out = c // groups
    s = {
        "attention.attn.in_proj_weight": (3 * c, c), "attention.attn.in_proj_bias": (3 * c,),
        "attention.attn.out_proj.weight": (c, c), "attention.attn.out_proj.bias": (c,),
        "attention_norm.weight": (c,), "attention_norm.bias": (c,),
        "ffn.layers.0.0.weight": (ffn, c), "ffn.layers.0.0.bias": (ffn,),
        "ffn.layers.1.weight": (c, ffn), "ffn.layers.1.bias": (c,),
        "ffn_norm.weight": (c,), "ffn_norm.bias": (c,),
        "cls_fcs.0.weight": (c, c), "cls_fcs.0.bias": (c,), "cls_fcs.1.weight": (c,), "cls_fcs.1.bias": (c,),
        "fc_cls.weight": (classes, c), "fc_cls.bias": (classes,),
        "reg_fcs.0.weight": (c, c), "reg_fcs.0.bias": (c,), "reg_fcs.1.weight": (c,), "reg_fcs.1.bias": (c,),
        "fc_reg.weight": (4, c), "fc_reg.bias": (4,),
        "sampling_n_mixing.sampling_offset_generator.0.weight": (p_in * groups * 3, c),
        "sampling_n_mixing.sampling_offset_generator.0.bias": (p_in * groups * 3,),
        "sampling_n_mixing.norm.weight": (c,), "sampling_n_mixing.norm.bias": (c,),
        "sampling_n_mixing.adaptive_mixing.parameter_generator.0.weight": (groups * (g_in * g_out + p_in * p_out), c),
        "sampling_n_mixing.adaptive_mixing.parameter_generator.0.bias": (groups * (g_in * g_out + p_in * p_out),),
        "sampling_n_mixing.adaptive_mixing.out_proj.weight": (c, groups * p_out * g_out),
        "sampling_n_mixing.adaptive_mixing.out_proj.bias": (c,),
        "iof_tau": (heads,),
    }
    if dii:
        s.update({
            "instance_interactive_conv.dynamic_layer.weight": (2 * c * 64, c),
            "instance_interactive_conv.dynamic_layer.bias": (2 * c * 64,),
            "instance_interactive_conv.norm_in.weight": (64,), "instance_interactive_conv.norm_in.bias": (64,),
            "instance_interactive_conv.norm_out.weight": (c,), "instance_interactive_conv.norm_out.bias": (c,),
            "instance_interactive_conv.fc_layer.weight": (c, c * 49), "instance_interactive_conv.fc_layer.bias": (c,),
            "instance_interactive_conv.fc_norm.weight": (c,), "instance_interactive_conv.fc_norm.bias": (c,),
            "instance_interactive_conv_norm.weight": (c,), "instance_interactive_conv_norm.bias": (c,),
        })
    return s


def official_state_dict(num_layers, device="cpu", **kw):
    """``num_layers`` heads ``roi_head.bbox_head.0..`` of ``official_head_shapes(**kw)``: standard
    normal values from a generator seeded with 0, or empty tensors on the meta device."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(num_layers):
        for k, shape in official_head_shapes(**kw).items():
            key = f"roi_head.bbox_head.{i}.{k}"
            sd[key] = torch.empty(shape, device="meta") if device == "meta" else torch.randn(shape, generator=g)
    return sd
