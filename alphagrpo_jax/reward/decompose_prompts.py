"""The decomposition conversation: four stages, their system prompts, request bodies and reply checks.

Every user message is a JSON object whose "task" names the stage, so a programmatic stand-in for the LLM
(`scripted.decomposer_chat`) can answer it. Reply checkers raise `SchemaError` with a message that is shown
to the model when it is asked again.
"""
from __future__ import annotations

import json
from typing import Any

from alphagrpo_jax.reward.records import QUALITY_TAGS, SEMANTIC_TAGS, canonical_tag

QUESTIONS, VALIDATE, TAG, QUALITY = "semantic_questions", "validate_question", "tag_question", "quality_questions"
STAGES = (QUESTIONS, VALIDATE, TAG, QUALITY)

SEMANTIC_TAG_MEANINGS = {
    "Style": "the medium or genre of the picture (photo, watercolour, pixel art, anime, ...)",
    "Environment": "the setting: place, background, weather, season, time of day",
    "Viewpoint": "how the camera sees the scene: angle, distance, framing, lens",
    "Existence": "whether a particular thing is in the picture at all (not how many)",
    "Count": "how many of something there are",
    "Attribute": "a fixed property of one thing: colour, material, shape, size, pattern, clothing",
    "Action": "what a subject is doing or how it is posed",
    "Spatial": "where things are relative to each other, or how they touch (on, behind, holding, wearing)",
    "Text": "written words, letters, numbers, signs or logos and their exact spelling",
    "Negative": "something the prompt says must not be there",
}
QUALITY_TAG_MEANINGS = {
    "Geometry": "shapes, straight lines, perspective and structure of man-made things",
    "Anatomy": "bodies of people and animals: faces, hands, limbs, proportions",
    "Texture": "surfaces and materials, fine detail, sharpness, noise",
    "Coherence": "every object is whole: nothing melted, fused, duplicated or cut off by mistake",
    "Lighting": "light sources, shadows and reflections agree with each other",
    "Physics": "weight, support, contact, liquids, motion behave plausibly",
    "Legibility": "text is clean, correctly spelled and readable, not gibberish",
    "Aesthetics": "overall appeal, faithful rendering of the asked style, no glitches or artefacts",
}


def _bullets(meanings: dict[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in meanings.items())


SYSTEM_PROMPTS = {
    QUESTIONS: f"""You turn a text-to-image prompt into a checklist: short yes/no questions that someone can \
answer by looking at an image generated from the prompt.
Rules:
- One fact per question: one thing being present, one property of one thing, one number, one action, one \
relation between two things, the style, the viewpoint, the setting, one piece of written text, or one thing that \
must be absent.
- Ask whether a thing is there before asking about its properties, numbers, actions or relations.
- Ask only about what the prompt states or what it cannot be drawn without. Never add a colour, style, setting or \
number the prompt leaves open.
- Ignore words that only praise quality ("4k", "masterpiece", "highly detailed"); they are not content.
- Keep negations: for "a street with no cars" ask "Is the street free of cars?".
- When the prompt quotes text to be written, ask whether exactly that text appears.
- Word every question so that "yes" means the image does what the prompt asks.
The user sends a JSON object {{"task": "{QUESTIONS}", "prompt": ...}}.
Reply with one JSON object and nothing else: {{"questions": ["...", "..."]}}""",

    VALIDATE: f"""You review one checklist question written for a text-to-image prompt and decide whether it \
belongs in the checklist. It belongs only if all three hold:
1. Required: every image that follows the prompt must show what the question asks about. Details that are \
merely likely or optional are not required.
2. Faithful: the question adds no colour, style, number, setting or other detail that the prompt does not give.
3. Not too narrow: some prompt words can be drawn either as an object or as an activity ("kite", "violin", \
"skateboard"). A picture of the object alone follows such a prompt, so a question that demands a person or the \
activity does not belong; "Is a kite visible?" does.
The user sends {{"task": "{VALIDATE}", "prompt": ..., "question": ...}}.
Reply with one JSON object and nothing else: {{"reason": "<one sentence>", "is_valid": true or false}}""",

    TAG: f"""You sort one checklist question for a text-to-image prompt into the single category that best \
names what it checks in the image:
{_bullets(SEMANTIC_TAG_MEANINGS)}
The user sends {{"task": "{TAG}", "prompt": ..., "question": ...}}.
Reply with one JSON object and nothing else: {{"reason": "<one sentence>", "tag": "<a category name exactly as \
written above>"}}""",

    QUALITY: f"""You write visual-quality questions for images generated from a text-to-image prompt. You get the \
prompt and its content checklist; ask whether the things and the scene they describe are well made.
Rules:
- "Yes" must always mean good: ask "Is the photo free of blur?", never "Is the photo blurry?".
- One aspect per question: the shape of a clock face and the readability of its numbers are two questions.
- The prompt decides what is correct. If it asks for something unusual (a floating rock, a six-legged horse), \
ask whether that is drawn convincingly, not whether the scene looks normal.
- Do not demand details the prompt leaves open; ask about their quality instead (for "a car", ask "Is the car's \
paint surface realistic?", not "Is the car red?").
- Checklist questions that are only about positions need no quality question.
Give each question exactly one of these categories:
{_bullets(QUALITY_TAG_MEANINGS)}
The user sends {{"task": "{QUALITY}", "prompt": ..., "semantic_questions": [...]}}.
Reply with one JSON object and nothing else: \
{{"quality_questions": [{{"question": "...", "tag": "<category>"}}]}}""",
}

REASK = ("That reply could not be used: {error}. Answer the same request again with only the JSON object in "
         "the format given in the instructions.")


class SchemaError(ValueError):
    """A parsed reply does not have the shape the stage asks for."""


def user_message(stage: str, **fields: Any) -> str:
    return json.dumps({"task": stage, **fields}, ensure_ascii=False)


def parse_user_message(text: str) -> tuple[str, dict[str, Any]]:
    """(stage, fields) of a message built by `user_message`; ValueError if it is not one."""
    obj = json.loads(text)
    if not isinstance(obj, dict) or obj.get("task") not in STAGES:
        raise ValueError(f"not a decomposition request: {text[:80]!r}")
    stage = obj.pop("task")
    return stage, obj


def _field(reply: Any, key: str) -> Any:
    if not isinstance(reply, dict) or key not in reply:
        raise SchemaError(f"expected a JSON object with the key {key!r}")
    return reply[key]


def check_questions(reply: Any) -> list[str]:
    items = _field(reply, "questions")
    if not isinstance(items, list) or not items or not all(isinstance(q, str) and q.strip() for q in items):
        raise SchemaError("'questions' must be a non-empty list of question strings")
    seen, out = set(), []
    for q in (q.strip() for q in items):
        if q.lower() not in seen:  # an LLM sometimes repeats itself; a duplicate would double-weight a fact
            seen.add(q.lower())
            out.append(q)
    return out


def check_validation(reply: Any) -> bool:
    value = _field(reply, "is_valid")
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise SchemaError(f"'is_valid' must be true or false, got {value!r}")
    return value


def check_tag(reply: Any) -> str:
    tag = _field(reply, "tag")
    canon = canonical_tag(tag, "semantic") if isinstance(tag, str) else None
    if canon is None:
        raise SchemaError(f"'tag' must be one of {', '.join(SEMANTIC_TAGS)}; got {tag!r}")
    return canon


def check_quality(reply: Any) -> list[tuple[str, str]]:
    items = _field(reply, "quality_questions")
    if not isinstance(items, list):
        raise SchemaError("'quality_questions' must be a list of {\"question\", \"tag\"} objects")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("question"), str) or not item["question"].strip():
            raise SchemaError(f"quality_questions[{i}] must be an object with a non-empty 'question'")
        tag = item.get("tag", item.get("aspect"))
        canon = canonical_tag(tag, "quality") if isinstance(tag, str) else None
        if canon is None:
            raise SchemaError(f"quality_questions[{i}].tag must be one of {', '.join(QUALITY_TAGS)}; got {tag!r}")
        out.append((item["question"].strip(), canon))
    return out
