"""Text embeddings the way AUTOMATIC1111 makes them: emphasis, long prompts, clip skip.

This is a direct implementation over the pipeline's own tokenizers and text
encoders rather than compel: compel reads a different syntax and normalises
weights its own way, so A1111 prompts would give other images even after
translating them. Every step follows A1111's ``FrozenCLIPEmbedderWithCustomWords``:

1. the prompt is parsed (:mod:`sdstudio.engine.prompts`) and each run is
   tokenized on its own, without special tokens;
2. tokens go into chunks of 75; a chunk that fills up while a comma lies
   within its last 20 tokens is cut after that comma and the rest moves on
   to the next chunk; ``BREAK`` starts a new chunk;
3. each chunk is wrapped in BOS/EOS and padded to 77 (with EOS, then the
   tokenizer's pad token after the first EOS, as for SD 2.x);
4. each chunk is encoded; with clip skip *n* > 1 the hidden state
   ``hidden_states[-n]`` goes through the final layer norm;
5. each token's embedding is multiplied by its weight and the chunk is
   rescaled so that its mean is the original mean;
6. the chunks are concatenated, and the shorter of prompt and negative prompt
   is padded with chunks of the empty prompt (A1111's "pad prompt/negative
   prompt to be same length").

A prompt that makes more than :data:`~sdstudio.engine.prompts.MAX_PROMPT_CHUNKS`
chunks is refused with :class:`~sdstudio.engine.errors.InvalidRequest` before
anything is encoded.

SDXL (two encoders) works the same way per encoder, as A1111 does: both take
the penultimate layer without the final layer norm, the two are concatenated
along the channels and the pooled embedding is the second encoder's for the
first chunk, unweighted. Clip skip does not apply to SDXL (A1111's default).
An SDXL refiner has only the second encoder: its embeddings and pooled embedding are
that encoder's alone, as A1111's refiner conditioner makes them. Pipelines with other
text encoders are not handled: :func:`encode_prompts` returns ``None`` and
:func:`prompt_arguments` falls back to text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdstudio.engine.errors import InvalidRequest
from sdstudio.engine.networks import expand_embedding_tokens
from sdstudio.engine.prompting.schedules import has_scheduling
from sdstudio.engine.prompts import BREAK, CHUNK_TOKENS, check_chunk_count, parse_prompt

CHUNK_LENGTH = CHUNK_TOKENS
COMMA_BACKTRACK = 20


@dataclass(slots=True)
class PromptChunk:
    """Up to 75 tokens and their weights (BOS/EOS and padding once finished: 77)."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PromptEmbeds:
    """What the diffusers pipeline takes instead of ``prompt`` and ``negative_prompt``.

    The pooled embeddings are set for SDXL only.
    """

    prompt_embeds: Any
    negative_prompt_embeds: Any
    pooled_prompt_embeds: Any = None
    negative_pooled_prompt_embeds: Any = None

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the pipeline call."""
        kwargs = {
            "prompt_embeds": self.prompt_embeds,
            "negative_prompt_embeds": self.negative_prompt_embeds,
        }
        if self.pooled_prompt_embeds is not None:
            kwargs["pooled_prompt_embeds"] = self.pooled_prompt_embeds
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        return kwargs


def is_sdxl(pipe: Any) -> bool:
    """Whether the pipeline has SDXL's two text encoders."""
    return all(
        getattr(pipe, name, None) is not None
        for name in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    )


def is_refiner(pipe: Any) -> bool:
    """Whether the pipeline has only SDXL's second text encoder (an SDXL refiner)."""
    return getattr(pipe, "text_encoder", None) is None and all(
        getattr(pipe, name, None) is not None for name in ("text_encoder_2", "tokenizer_2")
    )


def supports(pipe: Any) -> bool:
    """Whether the pipeline's text encoders are ones this module handles (SD 1.x/2.x, SDXL
    and its refiner)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return is_sdxl(pipe) or is_refiner(pipe)
    return all(getattr(pipe, name, None) is not None for name in ("text_encoder", "tokenizer"))


def prompt_arguments(
    pipe: Any, prompt: str, negative_prompt: str, clip_skip: int
) -> dict[str, Any]:
    """The pipeline's prompt arguments: text when that encodes as A1111 would, else embeddings.

    Pipelines this module does not handle get the text without its markup.
    Clip skip is ignored for SDXL, as A1111 does by default.
    """
    if has_scheduling(prompt) or has_scheduling(negative_prompt):
        # Only the engine's passes switch embeddings between steps (an SDXL refiner's
        # pass, for one, does not): never read the brackets as emphasis instead.
        raise InvalidRequest(
            "Prompt editing ([from:to:when]) and alternation ([a|b]) work in the model's "
            "own passes only; this pass cannot switch prompts between steps."
        )
    if supports(pipe):
        skip = 1 if is_sdxl(pipe) or is_refiner(pipe) else clip_skip
        tokenizer = pipe.tokenizer_2 if is_refiner(pipe) else pipe.tokenizer
        if needs_embeddings(tokenizer, prompt, negative_prompt, skip):
            embeds = encode_prompts(pipe, prompt, negative_prompt, clip_skip=skip)
            if embeds is not None:
                return embeds.as_kwargs()
    tokenizer = getattr(pipe, "tokenizer", None)
    texts = [plain_text(prompt), plain_text(negative_prompt)]
    if tokenizer is not None:
        texts = [expand_embedding_tokens(tokenizer, text, expand=False) for text in texts]
    return {"prompt": texts[0], "negative_prompt": texts[1] or None}


def needs_embeddings(tokenizer: Any, prompt: str, negative_prompt: str, clip_skip: int) -> bool:
    """Whether plain text would encode differently from A1111.

    True when either prompt uses emphasis or ``BREAK``, is longer than 75
    tokens, or when clip skip is above 1. Otherwise the pipeline's own
    encoding of :func:`plain_text` is exactly A1111's.
    """
    if clip_skip > 1:
        return True
    for text in (prompt, negative_prompt):
        parsed = parse_prompt(text)
        if not parsed.is_plain:
            return True
        expanded = expand_embedding_tokens(tokenizer, parsed.text)
        if len(_tokenize(tokenizer, [expanded])[0]) > CHUNK_LENGTH:
            return True
    return False


def plain_text(prompt: str) -> str:
    """The text to give the pipeline when no embeddings are used.

    Extra-network tags, escapes and emphasis markup are removed; for a prompt
    :func:`needs_embeddings` calls plain, ordinary text comes back unchanged.
    """
    return parse_prompt(prompt).text


def tokenize_chunks(tokenizer: Any, prompt: str, what: str = "prompt") -> list[PromptChunk]:
    """Split a prompt into finished 77-token chunks, as A1111's ``tokenize_line``.

    Raises :class:`~sdstudio.engine.errors.InvalidRequest` (calling the text
    ``what``) when there are more chunks than the limit.
    """
    runs = parse_prompt(prompt).runs
    tokenized = _tokenize(tokenizer, [expand_embedding_tokens(tokenizer, text) for text, _ in runs])
    comma = tokenizer.get_vocab().get(",</w>")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    last_comma = -1

    def next_chunk() -> None:
        nonlocal chunk, last_comma
        missing = CHUNK_LENGTH - len(chunk.tokens)
        chunk.tokens = [bos, *chunk.tokens, *[eos] * missing, eos]
        chunk.weights = [1.0, *chunk.weights, *[1.0] * missing, 1.0]
        chunks.append(chunk)
        chunk = PromptChunk()
        last_comma = -1

    for tokens, (text, weight) in zip(tokenized, runs, strict=True):
        # A1111 tests for weight -1 exactly, so a BREAK inside brackets is
        # encoded as the word; here any BREAK marker starts a chunk.
        if text == BREAK and weight < 0:
            next_chunk()
            continue
        for token in tokens:
            if token == comma:
                last_comma = len(chunk.tokens)
            elif (
                len(chunk.tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK
            ):
                cut = last_comma + 1
                moved = PromptChunk(chunk.tokens[cut:], chunk.weights[cut:])
                chunk.tokens, chunk.weights = chunk.tokens[:cut], chunk.weights[:cut]
                next_chunk()
                chunk = moved
            if len(chunk.tokens) == CHUNK_LENGTH:
                next_chunk()
            chunk.tokens.append(token)
            chunk.weights.append(weight)
    if chunk.tokens or not chunks:
        next_chunk()
    check_chunk_count(len(chunks), what)
    return chunks


def encode_prompts(
    pipe: Any, prompt: str, negative_prompt: str = "", *, clip_skip: int = 1
) -> PromptEmbeds | None:
    """Encode prompt and negative prompt A1111's way, padded to the same length.

    Returns ``None`` for pipelines :func:`supports` rejects, and raises
    :class:`~sdstudio.engine.errors.InvalidRequest` for a prompt over the
    chunk limit. The embeddings
    are on the text encoder's device, in its dtype. For SDXL, ``clip_skip``
    is not used and an empty negative prompt gives zeros when the model asks
    for that (``force_zeros_for_empty_prompt``), as in A1111 and diffusers.
    """
    if not supports(pipe):
        return None
    refiner = is_refiner(pipe)
    xl = refiner or is_sdxl(pipe)
    encoders = [] if refiner else [(pipe.tokenizer, pipe.text_encoder)]
    if xl:
        encoders.append((pipe.tokenizer_2, pipe.text_encoder_2))
    results = []
    for tokenizer, encoder in encoders:
        positive = tokenize_chunks(tokenizer, prompt)
        negative = tokenize_chunks(tokenizer, negative_prompt, "negative prompt")
        empty = tokenize_chunks(tokenizer, "")[0]
        count = max(len(positive), len(negative))
        positive += [empty] * (count - len(positive))
        negative += [empty] * (count - len(negative))
        results.append(
            (
                encode_chunks(encoder, tokenizer, positive, clip_skip=clip_skip, sdxl=xl),
                encode_chunks(encoder, tokenizer, negative, clip_skip=clip_skip, sdxl=xl),
            )
        )
    if not xl:
        return PromptEmbeds(results[0][0][0], results[0][1][0])
    import torch

    (positive_embeds, pooled), (negative_embeds, negative_pooled) = results[-1]
    if not refiner:
        (pos_l, _), (neg_l, _) = results[0]
        positive_embeds = torch.cat([pos_l, positive_embeds], dim=-1)
        negative_embeds = torch.cat([neg_l, negative_embeds], dim=-1)
    # The text path passes ``None`` for an empty negative prompt, which zeros it too.
    empty_negative = not plain_text(negative_prompt)
    if empty_negative and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        negative_embeds = torch.zeros_like(positive_embeds)
        negative_pooled = torch.zeros_like(pooled)
    return PromptEmbeds(positive_embeds, negative_embeds, pooled, negative_pooled)


def encode_chunks(
    encoder: Any,
    tokenizer: Any,
    chunks: list[PromptChunk],
    *,
    clip_skip: int = 1,
    sdxl: bool = False,
) -> tuple[Any, Any]:
    """Encode finished chunks into a ``(1, 77 * len(chunks), dim)`` tensor.

    Also returns the pooled (projected) embedding of the first chunk when the
    encoder gives one (SDXL's second encoder), else ``None``.
    """
    import torch

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    outputs = []
    pooled = None
    with torch.no_grad():
        for chunk in chunks:
            tokens = list(chunk.tokens)
            if pad != eos:  # SD 2.x, SDXL: pad with the pad token after the first EOS
                first = tokens.index(eos)
                tokens[first + 1 :] = [pad] * (len(tokens) - first - 1)
            ids = torch.tensor([tokens], dtype=torch.long, device=encoder.device)
            output = encoder(ids, output_hidden_states=sdxl or clip_skip > 1)
            if pooled is None:
                pooled = getattr(output, "text_embeds", None)
            z = _hidden_state(encoder, output, 2 if sdxl else clip_skip, layer_norm=not sdxl)
            weights = torch.tensor(chunk.weights, dtype=z.dtype, device=z.device)
            original_mean = z.mean()
            z = z * weights.reshape(1, -1, 1).expand(z.shape)
            new_mean = z.mean()
            if new_mean != 0:  # A1111 would divide by zero; keep the weighted z then
                z = z * (original_mean / new_mean)
            outputs.append(z)
    return torch.cat(outputs, dim=1), pooled


def _hidden_state(encoder: Any, output: Any, clip_skip: int, *, layer_norm: bool) -> Any:
    if clip_skip <= 1:
        return output[0]
    states = output.hidden_states
    z = states[-min(clip_skip, len(states))]
    if not layer_norm:  # SDXL takes the penultimate layer as it is
        return z
    # transformers 5 flattened CLIPTextModel (no ``text_model``); older ones nest it.
    # (diffusers' own ``clip_skip`` still reads ``text_model`` and fails on 5.)
    return getattr(encoder, "text_model", encoder).final_layer_norm(z)


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    # verbose=False: no "longer than the maximum sequence length" warning,
    # since long prompts are chunked here, not truncated.
    output = tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)
    ids: list[list[int]] = output["input_ids"]
    return ids
