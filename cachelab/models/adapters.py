"""What cachelab knows about each diffusers transformer: block stacks, attention roles, block outputs.

Roles are assigned by structure: the block list a module sits in and the attribute it is stored under in its
block, never by loose matching on qualified names. (A loose pattern such as ``transformer_blocks`` also matches
``temporal_transformer_blocks`` and gives Latte's temporal attention the spatial role.)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Adapter:
    """How to see one denoiser class.

    Attributes:
        stacks: groups of block-list attribute names in execution order (dotted paths for lists inside a
            ModuleDict). Lists in one group are interleaved (layer *i* runs block *i* of each list in turn, as in
            Latte); groups run one after another.
        roles: ``(block class name, attribute path) -> role`` for attention modules whose role the generic
            rules would get wrong (joint attention that concatenates text inside its processor, temporal lists),
            and for attention or FFN modules of classes the generic rules do not recognise (named here, found).
        stack_roles: ``(stack name, attribute path) -> role``, for the same purpose keyed by block list.
        block_outputs: ``block class name -> names of the forward arguments`` that each output of the block
            updates, in output order (blocks that return ``(encoder_hidden_states, hidden_states)``).
        unbatched_kwargs: denoiser keyword arguments with no batch dimension, never sliced per CFG branch.
        batched_kwargs: arguments that :data:`COMMON_UNBATCHED` names but that this denoiser takes per sample
            (Ideogram 4's ``position_ids``, one row of ids per packed sequence).
        batch_dims: denoiser keyword arguments whose batch dimension is not the first (argument -> dim).
        batch_sized_tokens: why the token count of the blocks depends on which samples share a call (a joint
            text+image sequence padded to the longest prompt of the batch), empty when it does not.
        folded: ``stack name -> what the blocks' batch dimension holds besides the samples`` (``frames`` or
            ``tokens``), for stacks that fold video axes into the batch (Latte).
        never_run: ``block class name -> attribute paths`` of modules a block holds but its forward never calls
            (weights kept so a checkpoint loads): not sites.
    """

    stacks: tuple[tuple[str, ...], ...] = ()
    roles: dict[tuple[str, str], str] = field(default_factory=dict)
    stack_roles: dict[tuple[str, str], str] = field(default_factory=dict)
    block_outputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unbatched_kwargs: tuple[str, ...] = ()
    batched_kwargs: tuple[str, ...] = ()
    batch_dims: dict[str, int] = field(default_factory=dict)
    batch_sized_tokens: str = ""
    folded: dict[str, str] = field(default_factory=dict)
    never_run: dict[str, tuple[str, ...]] = field(default_factory=dict)


#: Arguments that never carry a batch dimension in any diffusers transformer.
COMMON_UNBATCHED = (
    "image_rotary_emb",
    "rotary_emb",
    "freqs_cis",
    "img_ids",
    "txt_ids",
    "video_coords",
    "position_ids",
    "return_dict",
    "joint_attention_kwargs",
    "attention_kwargs",
    "cross_attention_kwargs",
    "rope_interpolation_scale",
)

_JOINT_FIRST = ("encoder_hidden_states", "hidden_states")
_HIDDEN_FIRST = ("hidden_states", "encoder_hidden_states")

ADAPTERS: dict[str, Adapter] = {
    "LatteTransformer3DModel": Adapter(
        stacks=(("transformer_blocks", "temporal_transformer_blocks"),),
        stack_roles={("temporal_transformer_blocks", "attn1"): "attn.temporal"},
        folded={"transformer_blocks": "frames", "temporal_transformer_blocks": "tokens"},
    ),
    "CogVideoXTransformer3DModel": Adapter(
        stacks=(("transformer_blocks",),),
        # attn1 concatenates the text tokens to the video tokens inside its processor.
        roles={("CogVideoXBlock", "attn1"): "attn.joint"},
        block_outputs={"CogVideoXBlock": _HIDDEN_FIRST},
    ),
    "PixArtTransformer2DModel": Adapter(stacks=(("transformer_blocks",),)),
    "DiTTransformer2DModel": Adapter(stacks=(("transformer_blocks",),)),
    "SD3Transformer2DModel": Adapter(
        stacks=(("transformer_blocks",),),
        roles={("JointTransformerBlock", "attn2"): "attn.spatial"},
        block_outputs={"JointTransformerBlock": _JOINT_FIRST},
    ),
    "FluxTransformer2DModel": Adapter(
        stacks=(("transformer_blocks",), ("single_transformer_blocks",)),
        roles={("FluxSingleTransformerBlock", "attn"): "attn.joint"},
        block_outputs={"FluxTransformerBlock": _JOINT_FIRST, "FluxSingleTransformerBlock": _JOINT_FIRST},
    ),
    "HunyuanVideoTransformer3DModel": Adapter(
        stacks=(("transformer_blocks",), ("single_transformer_blocks",)),
        roles={
            ("HunyuanVideoSingleTransformerBlock", "attn"): "attn.joint",
            ("HunyuanVideoTokenReplaceSingleTransformerBlock", "attn"): "attn.joint",
        },
        block_outputs={
            "HunyuanVideoTransformerBlock": _HIDDEN_FIRST,
            "HunyuanVideoSingleTransformerBlock": _HIDDEN_FIRST,
            "HunyuanVideoTokenReplaceTransformerBlock": _HIDDEN_FIRST,
            "HunyuanVideoTokenReplaceSingleTransformerBlock": _HIDDEN_FIRST,
        },
    ),
    "WanTransformer3DModel": Adapter(stacks=(("blocks",),)),
    # the VACE blocks are a control branch run before the main stack: they return a projected hint and the
    # control stream, not updates of the blocks' inputs, so only the main stack holds the denoiser's blocks
    "WanVACETransformer3DModel": Adapter(stacks=(("blocks",),)),
    # the face adapters return an addend for the stream (cross-attention to motion features), not an updated
    # stream; the main stack holds the denoiser's blocks
    "WanAnimateTransformer3DModel": Adapter(stacks=(("blocks",),)),
    "LTXVideoTransformer3DModel": Adapter(
        stacks=(("transformer_blocks",),),
        roles={("LTXVideoTransformerBlock", "attn2"): "attn.cross"},
    ),
    "MochiTransformer3DModel": Adapter(
        stacks=(("transformer_blocks",),),
        block_outputs={"MochiTransformerBlock": _HIDDEN_FIRST},
    ),
    "AllegroTransformer3DModel": Adapter(stacks=(("transformer_blocks",),)),
    # Blocks that return both streams. Which output updates which input cannot be told by shape when the text
    # and image token counts agree, so it is written down (stacks are found by the generic rule).
    "BriaTransformer2DModel": Adapter(block_outputs={"BriaTransformerBlock": _JOINT_FIRST, "BriaSingleTransformerBlock": _JOINT_FIRST}),
    "BriaFiboTransformer2DModel": Adapter(block_outputs={"BriaFiboTransformerBlock": _JOINT_FIRST}),
    "ChromaTransformer2DModel": Adapter(block_outputs={"ChromaTransformerBlock": _JOINT_FIRST}),
    "ConsisIDTransformer3DModel": Adapter(block_outputs={"ConsisIDBlock": _HIDDEN_FIRST}),
    "CogView3PlusTransformer2DModel": Adapter(block_outputs={"CogView3PlusTransformerBlock": _HIDDEN_FIRST}),
    "CogView4Transformer2DModel": Adapter(block_outputs={"CogView4TransformerBlock": _HIDDEN_FIRST}),
    "Flux2Transformer2DModel": Adapter(block_outputs={"Flux2TransformerBlock": _JOINT_FIRST, "Flux2SingleTransformerBlock": _JOINT_FIRST}),
    "LongCatImageTransformer2DModel": Adapter(block_outputs={"LongCatImageTransformerBlock": _JOINT_FIRST, "LongCatImageSingleTransformerBlock": _JOINT_FIRST}),
    "OvisImageTransformer2DModel": Adapter(block_outputs={"OvisImageTransformerBlock": _JOINT_FIRST, "OvisImageSingleTransformerBlock": _JOINT_FIRST}),
    "QwenImageTransformer2DModel": Adapter(block_outputs={"QwenImageTransformerBlock": _JOINT_FIRST}),
    "AuraFlowTransformer2DModel": Adapter(block_outputs={"AuraFlowJointTransformerBlock": _JOINT_FIRST}),
    # Llama hidden states come stacked layer-major, (layers, batch, tokens, dim)
    "HiDreamImageTransformer2DModel": Adapter(batch_dims={"encoder_hidden_states_llama3": 1}),
    # a call of one sample crops the text to its valid tokens; a batched call pads every sample to the full length
    "HunyuanVideoFramepackTransformer3DModel": Adapter(
        batch_sized_tokens="a call of one sample crops the text to its valid tokens while a batched call keeps "
        "them all",
    ),
    # cross-attention classes of their own, without is_cross_attention
    "StableAudio3DiTModel": Adapter(roles={("StableAudio3DiTBlock", "cross_attn"): "attn.cross"}),
    "LongCatAudioDiTTransformer": Adapter(roles={("AudioDiTBlock", "cross_attn"): "attn.cross"}),
    # joint video and audio streams; attn2 attends to the text and the a2v / v2a attentions to the other stream
    "LTX2VideoTransformer3DModel": Adapter(
        stacks=(("transformer_blocks",),),
        roles={
            ("LTX2VideoTransformerBlock", "attn2"): "attn.cross",
            ("LTX2VideoTransformerBlock", "audio_attn2"): "attn.cross",
            ("LTX2VideoTransformerBlock", "audio_to_video_attn"): "attn.cross",
            ("LTX2VideoTransformerBlock", "video_to_audio_attn"): "attn.cross",
        },
        block_outputs={"LTX2VideoTransformerBlock": ("hidden_states", "audio_hidden_states")},
    ),
    # its self-attention (a gated delta net or softmax attention with a camera branch) and FFN are classes of its own
    "SanaWMTransformer3DModel": Adapter(
        roles={
            ("SanaVideoMSCamCtrlBlock", "attn"): "attn.spatial",
            ("SanaVideoMSCamCtrlBlock", "cross_attn"): "attn.cross",
            ("SanaVideoMSCamCtrlBlock", "mlp"): "ffn",
        },
    ),
    # LTX-2's layout run on the video stream only: the audio and cross-modal modules are loaded, never called
    "SanaWMLTX2RefinerTransformer3DModel": Adapter(
        stacks=(("transformer_blocks",),),
        roles={("SanaWMLTX2RefinerTransformerBlock", "attn2"): "attn.cross"},
        never_run={
            "SanaWMLTX2RefinerTransformerBlock": (
                "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn", "audio_ff",
            ),
        },
    ),
    # the text blocks of each modality run before the fused video/audio blocks, on the text tokens alone; a fused
    # block takes and returns both streams (vis, aud) and attends to the text and to the other stream. Its video
    # stream is its first positional argument, which block_input reads as the main stream, hidden_states
    "Kandinsky6Transformer3DModel": Adapter(
        stacks=(("visual_transformer_blocks",),),
        roles={
            ("Kandinsky6FusedTransformerDecoderBlock", "video_dec_block.cross_attention"): "attn.cross",
            ("Kandinsky6FusedTransformerDecoderBlock", "audio_dec_block.cross_attention"): "attn.cross",
            ("Kandinsky6FusedTransformerDecoderBlock", "va_cross_attention"): "attn.cross",
            ("Kandinsky6FusedTransformerDecoderBlock", "av_cross_attention"): "attn.cross",
        },
        block_outputs={"Kandinsky6FusedTransformerDecoderBlock": ("hidden_states", "aud")},
    ),
    # one packed sequence of text, audio and video rows under full self-attention; the layout arguments, and the
    # timestep (the layout's distinct noise levels), are shared by every sample of the batch
    "MiniMaxH3Transformer3DModel": Adapter(
        stacks=(("transformer_blocks",),),
        roles={("MiniMaxH3TransformerBlock", "attn"): "attn.joint"},
        unbatched_kwargs=("timestep", "timestep_indices", "token_tags", "video_indices", "audio_indices", "text_indices"),
    ),
    # the refiners run once on the image and once on the text tokens before the main layers
    "Lumina2Transformer2DModel": Adapter(
        stacks=(("layers",),),
        batch_sized_tokens="its main layers run on one joint text+image sequence per sample, padded to the longest "
        "prompt in the call",
    ),
    # the noise refiner runs on the image tokens alone; the main layers on the Perceiver's gist tokens joined to
    # them, as many gist tokens as the longest prompt of the call asks for
    "BriaFibo2Transformer2DModel": Adapter(
        stacks=(("layers",),),
        roles={("BriaFibo2TransformerBlock", "attention"): "attn.joint",
               ("BriaFibo2TransformerBlock", "cross_attention"): "attn.cross"},
        batch_sized_tokens="its main layers run on the image tokens joined to one gist token per two text tokens "
        "of the longest prompt in the call",
    ),
    # Per-mode blocks first (the text, the image and the reference images, each attending within itself), then
    # joint blocks over the text and the content tokens. The text's mode blocks run at t = 0 on the text alone,
    # before the image's: the stacks start at the image's, so a residual from the first block's input to the last
    # block's output stays on the image tokens.
    "Flux3Transformer2DModel": Adapter(
        stacks=(("mode_blocks.image",), ("mode_blocks.image_cond",), ("single_transformer_blocks",)),
        roles={("Flux3SingleTransformerBlock", "attn"): "attn.joint"},
        block_outputs={"Flux3SingleTransformerBlock": _JOINT_FIRST},
    ),
    # one sequence of text and image tokens in every block
    "Krea2Transformer2DModel": Adapter(roles={("Krea2TransformerBlock", "attn"): "attn.joint"}),
    # text and image tokens packed into one sequence per sample, each sample with its own position ids
    "Ideogram4Transformer2DModel": Adapter(
        roles={("Ideogram4TransformerBlock", "attention"): "attn.joint"},
        batched_kwargs=("position_ids",),
    ),
    # a decoder over text, time and image tokens: its attention is built as cross-attention but is given the
    # block's own (joint) sequence as keys and values; position ids come one row per sample
    "OmniGenTransformer2DModel": Adapter(
        roles={("OmniGenBlock", "self_attn"): "attn.joint"},
        batched_kwargs=("position_ids",),
    ),
    # attn1 joins the text tokens to the image tokens inside its processor
    "GlmImageTransformer2DModel": Adapter(
        roles={("GlmImageTransformerBlock", "attn1"): "attn.joint"},
        block_outputs={"GlmImageTransformerBlock": _HIDDEN_FIRST},
    ),
}

#: Block lists whose attention is joint by construction: single-stream blocks (Flux, Chroma, Bria, AuraFlow,
#: Flux2, LongCat-Image, Ovis-Image ...) run one attention over the concatenated text and image tokens.
JOINT_STACKS = ("single_transformer_blocks",)


def adapter_for(model_class_name: str) -> Adapter | None:
    return ADAPTERS.get(model_class_name)
