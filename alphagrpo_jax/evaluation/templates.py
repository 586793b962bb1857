"""Judge prompt templates: this project's own wording (not the benchmarks' official text). Each is replaceable
from config (`config.judge.templates.<name>` = text or file:PATH): put the official prompt there to reproduce
published numbers; scores.json records every template's sha256, and the report flags a non-official one.

Placeholders: {questions} (one per line), {prompt}, {explanation}, {instruction}.
"""
from __future__ import annotations

TEMPLATES = {
    # TIIF-Bench: answer each yes/no question on its own line, "yes" or "no" first.
    "tiif_yes_no": (
        "Look at the image and answer these yes/no questions about it.\n\nQuestions:\n{questions}\n\n"
        "Write exactly one line per question, in the same order. Begin each line with yes or no, then a short "
        "reason. Write nothing else."),
    # WISE (legacy): three 0-2 ratings.
    "wise_legacy": (
        "Rate how well this generated image shows what the text asks for.\n\nText: {prompt}\n"
        "What a correct image shows: {explanation}\n\n"
        "Give three integer ratings from 0 (poor) to 2 (excellent):\n"
        "Consistency: does the image show exactly what the text means?\n"
        "Realism: is it rendered realistically?\n"
        "Aesthetic Quality: is it visually appealing?\n\n"
        "Answer in three lines: 'Consistency: N', 'Realism: N', 'Aesthetic Quality: N'."),
    # WISE (verified): one binary score.
    "wise_verified": (
        "Decide whether this generated image correctly shows what the text asks for and is usable.\n\n"
        "Text: {prompt}\nWhat a correct image shows: {explanation}\n\n"
        "Answer with one line 'Score: 1' (correct and usable) or 'Score: 0' (not)."),
    # GEdit-Bench semantic consistency (source image first, edited image second).
    "gedit_sc": (
        "The first image is the original, the second the result of editing it with this instruction:\n"
        "{instruction}\n\nRate from 0 to 10 (a) how well the edit follows the instruction and (b) how well the "
        "rest of the image is left unchanged. Answer in JSON: {{\"score\": [a, b], \"reasoning\": \"...\"}}"),
    # GEdit-Bench perceptual quality (the edited image).
    "gedit_pq": (
        "Rate this image from 0 to 10 for (a) how natural it looks and (b) how free it is of artifacts. "
        "Answer in JSON: {{\"score\": [a, b], \"reasoning\": \"...\"}}"),
}
