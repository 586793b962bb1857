"""System prompts (our wording of what BAGEL's prompts ask for). `<think>` is plain text, not a special token."""

GEN_THINK_SYSTEM_PROMPT = (
    "You should first think about the planning process in your mind and then generate the image. "
    "The planning process is enclosed within <think> </think> tags, i.e. <think> planning process here "
    "</think> image here.")

VLM_THINK_SYSTEM_PROMPT = (
    "You should first think about the reasoning process in your mind and then give the user the answer. "
    "The reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning process here "
    "</think> answer here.")
