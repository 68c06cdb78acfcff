"""The ``prompts`` section: name -> ``Prompt`` (stock media or a text, per language)."""

from __future__ import annotations

from types import MappingProxyType

from callctl.flows.model import LANGUAGES, Prompt, PromptVersion, is_media, template_variables
from callctl.flows.reader import PROMPT_RE, Sections, StepReader
from callctl.flows.yamlsafe import Node


def parse_prompts(ctx: Sections) -> dict[str, Prompt]:
    out: dict[str, Prompt] = {}
    for name, (key, node) in ctx.named_entries("prompts", PROMPT_RE,
                                                 " (lower-case letters, digits, - and _)").items():
        r = ctx.reader(f"prompt {name}", node)
        versions: dict[str, PromptVersion] = {}
        if node.kind == "map" and "text" not in node.entries:
            for lang, (lang_key, value) in node.entries.items():
                if lang not in LANGUAGES:
                    r.error(f"prompt '{name}': unknown language '{lang}' (known: {', '.join(LANGUAGES)}); "
                            "give media for every language directly or one entry per language", lang_key)
                    continue
                version = _prompt_version(r, name, value)
                if version is not None:
                    versions[lang] = version
        else:
            version = _prompt_version(r, name, node)
            if version is not None:
                if version.text is not None:
                    r.error(f"prompt '{name}': a text must say its language (en: {{text: ...}}, fr: ...)", node)
                else:
                    versions["*"] = version
        if versions:
            out[name] = Prompt(name=name, versions=MappingProxyType(versions), pos=key.pos)
    return out


def _prompt_version(r: StepReader, name: str, node: Node) -> PromptVersion | None:
    if node.kind == "map":
        opts = r.mapping(("text",), ("text",), node=node)
        text = r.text(opts.get("text"), f"prompt '{name}' text") if opts else None
        return PromptVersion(text=text) if text is not None else None
    media: list[str] = []
    for item in node.items if node.kind == "seq" else [node]:
        value = r.text(item, f"prompt '{name}'")
        if value is None:
            continue
        if not is_media(value):
            r.error(f"prompt '{name}': '{value}' is not media (sound:NAME, digits:123, number:42, tone:ring) "
                    "nor {text: ...}", item)
            continue
        if template_variables(value):
            r.error(f"prompt '{name}': variables like {{x}} go in flows, not in prompts", item)
            continue
        media.append(value)
    return PromptVersion(media=tuple(media)) if media else None
