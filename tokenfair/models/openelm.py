"""An OpenELM-style decoder (Mehta et al. 2024, arXiv 2404.14619) as transformers classes, for training from scratch.

transformers has no native OpenELM and Apple's hub remote code cannot be loaded offline, so the architecture is
implemented here with Apple's configuration names and parameter names (transformer.token_embeddings,
transformer.layers.N.attn.qkv_proj / q_norm / k_norm / out_proj, ffn.proj_1 / proj_2, attn_norm, ffn_norm,
transformer.norm), so a checkpoint's tensors line up with Apple's:

- layer-wise scaling: per-layer query heads and FFN width from `qkv_multipliers` / `ffn_multipliers`
  interpolated across the layers, rounded with make_divisible (tokenfair.presets.openelm_layer_shapes);
- grouped-query attention (`num_gqa_groups` query heads per KV head), one fused q/k/v projection, no biases;
- RMSNorm pre-norm, RMSNorm on each query and key head (`normalize_qk_projections`), RoPE, SwiGLU FFN;
- the input embedding shared with the output projection when `tie_word_embeddings`
  (Apple: `share_input_output_layers`; the two stay in sync).

Attention is torch's scaled_dot_product_attention with is_causal=True; `attention_mask=None` (packed training
windows) is the fast path. There is no KV cache: generate() is not supported. Initialisation follows CoreNet's
OpenELM (the code the published models were trained with): linear weights N(0, in_features^-1/2), the
embedding N(0, model_dim^-1/2), the attention and FFN output projections N(0, model_dim^-1/2 (2 L)^-1/2),
norms 1. It is deterministic given torch's seed.

Importing tokenfair.models registers the classes with AutoConfig / AutoModelForCausalLM (model_type "openelm"),
so `AutoModelForCausalLM.from_pretrained(folder)` loads a saved model.
"""

from __future__ import annotations

import torch
import transformers
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..presets import openelm_layer_shapes

try:  # transformers >= 5: init functions that skip tensors already loaded from a checkpoint
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - transformers 4.x
    from torch.nn import init as _init

_TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])

# Derived per-layer values a saved config.json carries; recomputed from the multipliers on load.
_DERIVED = ("num_query_heads", "num_kv_heads", "ffn_dims")


class OpenELMConfig(PretrainedConfig):
    """Apple's OpenELMConfig fields (configuration_openelm.py), plus `tie_word_embeddings` (kept equal to
    `share_input_output_layers`), `rms_norm_eps` and `attention_dropout`. The per-layer `num_query_heads`,
    `num_kv_heads` and `ffn_dims` are derived from the multipliers."""

    model_type = "openelm"
    attribute_map = {
        "hidden_size": "model_dim",
        "num_hidden_layers": "num_transformer_layers",
        "max_position_embeddings": "max_context_length",
    }

    def __init__(
        self,
        vocab_size: int = 32000,
        max_context_length: int = 2048,
        num_transformer_layers: int = 12,
        model_dim: int = 2048,
        head_dim: int = 128,
        qkv_multipliers=1.0,
        num_gqa_groups: int = 1,
        ffn_multipliers=4.0,
        ffn_with_glu: bool = True,
        ffn_dim_divisor: int = 256,
        activation_fn_name: str = "swish",
        normalization_layer_name: str = "rms_norm",
        normalize_qk_projections: bool = False,
        share_input_output_layers: bool | None = None,
        tie_word_embeddings: bool | None = None,
        rope_freq_constant: float = 10000,
        rope_max_length: int = 4096,
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        attention_dropout: float = 0.0,
        use_cache: bool = False,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs,
    ) -> None:
        for name in _DERIVED:
            kwargs.pop(name, None)
        kwargs.pop("max_position_embeddings", None)  # an alias of max_context_length (attribute_map)
        if tie_word_embeddings is None:
            tie_word_embeddings = bool(share_input_output_layers) if share_input_output_layers is not None else False
        if activation_fn_name not in ("swish", "silu"):
            raise ValueError(f"OpenELMConfig: only the swish/silu activation is implemented, got {activation_fn_name!r}")
        if normalization_layer_name != "rms_norm":
            raise ValueError(f"OpenELMConfig: only rms_norm is implemented, got {normalization_layer_name!r}")
        self.vocab_size = vocab_size
        self.max_context_length = max_context_length
        self.num_transformer_layers = num_transformer_layers
        self.model_dim = model_dim
        self.head_dim = head_dim
        self.qkv_multipliers = list(qkv_multipliers) if isinstance(qkv_multipliers, tuple) else qkv_multipliers
        self.num_gqa_groups = num_gqa_groups
        self.ffn_multipliers = list(ffn_multipliers) if isinstance(ffn_multipliers, tuple) else ffn_multipliers
        self.ffn_with_glu = ffn_with_glu
        self.ffn_dim_divisor = ffn_dim_divisor
        self.activation_fn_name = activation_fn_name
        self.normalization_layer_name = normalization_layer_name
        self.normalize_qk_projections = normalize_qk_projections
        self.share_input_output_layers = bool(tie_word_embeddings)
        self.rope_freq_constant = rope_freq_constant
        self.rope_max_length = rope_max_length
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.attention_dropout = attention_dropout
        shapes = openelm_layer_shapes(
            {
                "num_transformer_layers": num_transformer_layers,
                "model_dim": model_dim,
                "head_dim": head_dim,
                "num_gqa_groups": num_gqa_groups,
                "ffn_dim_divisor": ffn_dim_divisor,
                "qkv_multipliers": self.qkv_multipliers,
                "ffn_multipliers": self.ffn_multipliers,
            }
        )
        self.num_query_heads = shapes["num_query_heads"]
        self.num_kv_heads = shapes["num_kv_heads"]
        self.ffn_dims = shapes["ffn_dims"]
        super().__init__(
            tie_word_embeddings=bool(tie_word_embeddings),
            use_cache=use_cache,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **kwargs,
        )
        self.tie_word_embeddings = bool(tie_word_embeddings)


class OpenELMRMSNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rope_tables(config: OpenELMConfig, seq_len: int, device, position_ids=None):
    """cos, sin of shape [1 or B, 1, S, head_dim], float32 (RoPE in full precision, as Apple's code)."""
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_freq_constant ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
    if position_ids is None:
        pos = torch.arange(seq_len, device=device, dtype=torch.float32)[None, :]
    else:
        pos = position_ids.to(device=device, dtype=torch.float32)
    freqs = pos[..., None] * inv_freq  # [B, S, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :, :]
    return emb.cos(), emb.sin()


class OpenELMAttention(nn.Module):
    def __init__(self, config: OpenELMConfig, layer_idx: int):
        super().__init__()
        self.head_dim = config.head_dim
        self.num_q_heads = config.num_query_heads[layer_idx]
        self.num_kv_heads = config.num_kv_heads[layer_idx]
        self.num_groups = self.num_q_heads // self.num_kv_heads
        self.dropout = float(config.attention_dropout)
        d = config.model_dim
        self.qkv_proj = nn.Linear(d, (self.num_q_heads + 2 * self.num_kv_heads) * self.head_dim, bias=False)
        if config.normalize_qk_projections:
            self.q_norm = OpenELMRMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = OpenELMRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.out_proj = nn.Linear(self.num_q_heads * self.head_dim, d, bias=False)
        self.out_proj._openelm_residual = True

    def extra_repr(self) -> str:
        return f"query_heads={self.num_q_heads}, kv_heads={self.num_kv_heads}"

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None):
        b, s, _ = x.shape
        qkv = self.qkv_proj(x).view(b, s, self.num_q_heads + 2 * self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k, v = qkv.split([self.num_q_heads, self.num_kv_heads, self.num_kv_heads], dim=1)
        if self.q_norm is not None:
            q = self.q_norm(q)
            k = self.k_norm(k)
        qf, kf = q.float(), k.float()
        q = (qf * cos + _rotate_half(qf) * sin).type_as(v)
        k = (kf * cos + _rotate_half(kf) * sin).type_as(v)
        if self.num_groups > 1:
            k = k.repeat_interleave(self.num_groups, dim=1)
            v = v.repeat_interleave(self.num_groups, dim=1)
        dropout = self.dropout if self.training else 0.0
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).reshape(b, s, self.num_q_heads * self.head_dim))


class OpenELMFeedForward(nn.Module):
    def __init__(self, config: OpenELMConfig, layer_idx: int):
        super().__init__()
        d, f = config.model_dim, config.ffn_dims[layer_idx]
        self.glu = bool(config.ffn_with_glu)
        self.proj_1 = nn.Linear(d, 2 * f if self.glu else f, bias=False)
        self.proj_2 = nn.Linear(f, d, bias=False)
        self.proj_2._openelm_residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.glu:
            gate, up = self.proj_1(x).chunk(2, dim=-1)
            return self.proj_2(F.silu(gate) * up)
        return self.proj_2(F.silu(self.proj_1(x)))


class OpenELMDecoderLayer(nn.Module):
    def __init__(self, config: OpenELMConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = OpenELMRMSNorm(config.model_dim, eps=config.rms_norm_eps)
        self.attn = OpenELMAttention(config, layer_idx)
        self.ffn_norm = OpenELMRMSNorm(config.model_dim, eps=config.rms_norm_eps)
        self.ffn = OpenELMFeedForward(config, layer_idx)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.ffn(self.ffn_norm(x))


class OpenELMPreTrainedModel(PreTrainedModel):
    config_class = OpenELMConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["OpenELMDecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        cfg = self.config
        if isinstance(module, nn.Linear):
            if getattr(module, "_openelm_residual", False):
                std = cfg.model_dim**-0.5 * (2 * cfg.num_transformer_layers) ** -0.5
            else:
                std = module.in_features**-0.5
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            _init.normal_(module.weight, mean=0.0, std=module.embedding_dim**-0.5)
        elif isinstance(module, OpenELMRMSNorm):
            _init.ones_(module.weight)


class OpenELMModel(OpenELMPreTrainedModel):
    def __init__(self, config: OpenELMConfig):
        super().__init__(config)
        self.token_embeddings = nn.Embedding(config.vocab_size, config.model_dim)
        self.layers = nn.ModuleList(OpenELMDecoderLayer(config, i) for i in range(config.num_transformer_layers))
        self.norm = OpenELMRMSNorm(config.model_dim, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.token_embeddings

    def set_input_embeddings(self, value):
        self.token_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        use_cache: bool | None = None,  # the transformers decoders' argument; there is no KV cache here
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        x = self.token_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        b, s = x.shape[:2]
        cos, sin = _rope_tables(self.config, s, x.device, position_ids)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # padding: keys with mask 0 are hidden; every query still sees itself (no all-masked rows)
            causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
            mask = causal[None, None] & attention_mask.bool()[:, None, None, :]
            mask = mask | torch.eye(s, dtype=torch.bool, device=x.device)[None, None]
        hidden = () if output_hidden_states else None
        for layer in self.layers:
            if output_hidden_states:
                hidden += (x,)
            if self.gradient_checkpointing and self.training:
                x = self._gradient_checkpointing_func(layer.__call__, x, cos, sin, mask)
            else:
                x = layer(x, cos, sin, mask)
        x = self.norm(x)
        if output_hidden_states:
            hidden += (x,)
        return x, hidden


class OpenELMForCausalLM(OpenELMPreTrainedModel):
    # transformers 5 ties {target: source}; 4.x takes the list of tied names.
    if _TRANSFORMERS_MAJOR >= 5:
        _tied_weights_keys = {"lm_head.weight": "transformer.token_embeddings.weight"}
    else:  # pragma: no cover
        _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config: OpenELMConfig):
        super().__init__(config)
        self.transformer = OpenELMModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.model_dim, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.token_embeddings

    def set_input_embeddings(self, value):
        self.transformer.token_embeddings = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def get_decoder(self):
        return self.transformer

    def set_decoder(self, decoder):
        self.transformer = decoder

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """Logits [B, S, vocab]; with `labels` ([B, S], usually the input ids; -100 ignored) also the mean
        next-token cross-entropy, shifted inside as transformers' causal LMs do."""
        h, hidden = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=bool(output_hidden_states),
        )
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        out = CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=hidden)
        if return_dict is False:
            return out.to_tuple()
        return out


def register() -> None:
    """Make "openelm" known to AutoConfig / AutoModelForCausalLM (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoConfig.register("openelm", OpenELMConfig, exist_ok=True)
    AutoModelForCausalLM.register(OpenELMConfig, OpenELMForCausalLM, exist_ok=True)
