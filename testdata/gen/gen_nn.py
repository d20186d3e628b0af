"""Golden files for internal/nn composite layers, from diffusers' own modules."""
import torch
from diffusers.models.resnet import ResnetBlock2D

from common import randn, save, seeded


def resnet_case(g, prefix, n, cin, cout, h, w, temb, groups):
    blk = ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=temb, groups=groups, eps=1e-6)
    with torch.no_grad():
        for p in blk.parameters():
            p.copy_(randn(g, *p.shape, scale=0.3))
    x = randn(g, n, cin, h, w).requires_grad_()
    t = randn(g, n, temb).requires_grad_()
    y = blk(x, t)
    dy = randn(g, *y.shape)
    y.backward(dy)
    out = {f"{prefix}.x": x, f"{prefix}.temb": t, f"{prefix}.y": y, f"{prefix}.dy": dy,
           f"{prefix}.dx": x.grad, f"{prefix}.dtemb": t.grad}
    for name, p in blk.named_parameters():
        out[f"{prefix}.w.{name}"] = p
        out[f"{prefix}.g.{name}"] = p.grad
    meta = {f"{prefix}": f"{n},{cin},{cout},{h},{w},{temb},{groups}"}
    return out, meta


def generate():
    g = seeded(20)
    tensors, meta = {}, {}
    for prefix, args in (("c0", (3, 20, 24, 9, 7, 16, 4)), ("c1", (1, 16, 16, 8, 8, 12, 8))):
        t, m = resnet_case(g, prefix, *args)
        tensors.update(t)
        meta.update(m)
    save("nn/resnet.safetensors", tensors, meta)
    generate_transformer()
    generate_lora()


def transformer_case(g, prefix, n, c, h, w, heads, dim_head, ctx_len, ctx_dim, groups, linear):
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    m = Transformer2DModel(num_attention_heads=heads, attention_head_dim=dim_head, in_channels=c, num_layers=1,
                           cross_attention_dim=ctx_dim, norm_num_groups=groups, use_linear_projection=linear)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(randn(g, *p.shape, scale=0.3))
    x = randn(g, n, c, h, w).requires_grad_()
    ctx = randn(g, n, ctx_len, ctx_dim).requires_grad_()
    y = m(x, encoder_hidden_states=ctx).sample
    dy = randn(g, *y.shape)
    y.backward(dy)
    out = {f"{prefix}.x": x, f"{prefix}.ctx": ctx, f"{prefix}.y": y, f"{prefix}.dy": dy,
           f"{prefix}.dx": x.grad, f"{prefix}.dctx": ctx.grad}
    for name, p in m.named_parameters():
        out[f"{prefix}.w.{name}"] = p
        out[f"{prefix}.g.{name}"] = p.grad
    meta = {prefix: f"{n},{c},{h},{w},{heads},{dim_head},{ctx_len},{ctx_dim},{groups},{int(linear)}"}
    return out, meta


def generate_transformer():
    g = seeded(21)
    tensors, meta = {}, {}
    for prefix, args in (("c0", (2, 16, 5, 6, 2, 8, 7, 12, 4, False)),
                         ("c1", (1, 24, 4, 4, 3, 8, 5, 10, 8, True))):
        t, m = transformer_case(g, prefix, *args)
        tensors.update(t)
        meta.update(m)
    save("nn/transformer2d.safetensors", tensors, meta)


def generate_lora():
    """A linear layer with a PEFT LoRA adapter (r 4, alpha 8): the base is
    frozen by PEFT, so only lora_A/lora_B get gradients."""
    from peft import LoraConfig, get_peft_model

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(13, 11)

        def forward(self, x):
            return self.lin(x)

    g = seeded(22)
    m = M()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(randn(g, *p.shape, scale=0.3))
    pm = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=["lin"], init_lora_weights="gaussian"))
    lin = pm.base_model.model.lin
    with torch.no_grad():  # B starts at zero in PEFT; make it non-zero so every path is exercised
        lin.lora_B["default"].weight.copy_(randn(g, 11, 4, scale=0.3))
    x = randn(g, 3, 5, 13).requires_grad_()
    y = pm(x)
    dy = randn(g, *y.shape)
    y.backward(dy)
    save("nn/lora.safetensors", {
        "x": x, "y": y, "dy": dy, "dx": x.grad,
        "w.lin.weight": lin.base_layer.weight, "w.lin.bias": lin.base_layer.bias,
        "w.lin.lora_A.weight": lin.lora_A["default"].weight, "w.lin.lora_B.weight": lin.lora_B["default"].weight,
        "g.lin.lora_A.weight": lin.lora_A["default"].weight.grad, "g.lin.lora_B.weight": lin.lora_B["default"].weight.grad,
    }, {"rank": 4, "alpha": 8})
