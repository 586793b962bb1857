"""System prompts (our wording of what BAGEL's prompts ask for). `<think>` is plain text, not a special token."""

GEN_THINK_SYSTEM_PROMPT = (
    "You should first think about the planning process in your mind and then generate the image. "
    "The planning process is enclosed within <think> </think> tags, i.e. <think> planning process here "
    "</think> image here.")

VLM_THINK_SYSTEM_PROMPT = (
    "You should first think about the reasoning process in your mind and then give the user the answer. "
    "The reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning process here "
    "</think> answer here.")


def think_system_prompt(cfg) -> str:
    """The think-mode system prompt of a model (BagelConfig): the one its release records
    (`bagel_config.json: think_system_prompt`, e.g. the toy base's short one), else BAGEL's."""
    return GEN_THINK_SYSTEM_PROMPT if cfg.think_system_prompt is None else cfg.think_system_prompt


def reflection_prompt(prompt: str) -> str:
    """Self-Reflective Refinement's request (our wording of AlphaGRPO's): it follows the model's own image in
    the context, tells it the image did not satisfy the request, and asks for a reflection and an editing
    instruction before the image is redrawn."""
    return (f"You were asked to draw: {prompt}. Your image above does not match this request. Reflect on what "
            f"went wrong, then write an instruction to edit the image so that it matches.")
