"""Makes the chat-template goldens keel's Jinja engine is tested against.

For every case below, Hugging Face transformers renders a conversation with
apply_chat_template(tokenize=False) and the template in templates/ (see
README.md for where each template comes from); goldens.json records the
template file, every variable the template saw, and the text it produced (or
the message of the exception raise_exception threw). keel's test
(tests/jinja/test_goldens.cpp) renders the same template with the same
variables and must produce the same bytes.

The tokenizer object is a one-token stand-in: apply_chat_template only uses it
for its special tokens, and every case names bos_token / eos_token itself.
Usage: python3 make_goldens.py          (needs transformers and jinja2; no torch)
"""
import datetime, json, os

import jinja2
import transformers
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
# strftime_now (Llama-3.2's date header) reads this clock: a fixed time, recorded
# in goldens.json so keel's test sets the same one.
NOW = datetime.datetime(2024, 9, 5, 13, 7, 9)


class FixedClock(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


transformers.utils.chat_template_utils.datetime = FixedClock
tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))

SPECIAL = {
    "qwen2.5": {},  # Qwen's configs name no bos_token
    "qwen3": {},
    "llama3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3.2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "mistral-nemo": {"bos_token": "<s>", "eos_token": "</s>"},
    "smollm2": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
}

BASIC = [
    {"role": "system", "content": "You are a terse assistant.  "},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": " Paris. "},
    {"role": "user", "content": "And of Japan? Café ☕ «quotes» \"double\" 'single'\n"},
]
NO_SYSTEM = [
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello, how can I help?"},
    {"role": "user", "content": "Tell me a joke."},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["city"],
        },
    },
}
TOOL_CALL = {"id": "call12345", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius", "days": 2}}}
TOOL_CHAT = [
    {"role": "system", "content": "You can look up the weather."},
    {"role": "user", "content": "What's the weather in Zürich?"},
    {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
    {"role": "tool", "tool_call_id": "call12345", "content": "{\"temperature\": 21.5, \"sky\": \"clear\"}"},
]
THINKING_HISTORY = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "<think>\nSimple arithmetic.\n</think>\n\n4"},
    {"role": "user", "content": "And 3+3?"},
]
NOT_ALTERNATING = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]

CASES = []


def case(name, template, messages, add_generation_prompt=True, tools=None, **extra):
    CASES.append((name, template, messages, add_generation_prompt, tools, extra))


for t in SPECIAL:
    case(f"{t}/basic", t, BASIC)
    case(f"{t}/no_system", t, NO_SYSTEM, add_generation_prompt=False)
case("qwen2.5/tools", "qwen2.5", TOOL_CHAT, tools=[WEATHER_TOOL])
case("qwen3/thinking_on", "qwen3", THINKING_HISTORY, enable_thinking=True)
case("qwen3/thinking_off", "qwen3", THINKING_HISTORY, enable_thinking=False)
case("qwen3/tools", "qwen3", TOOL_CHAT, tools=[WEATHER_TOOL], enable_thinking=False)
case("qwen3/tool_call_string_arguments", "qwen3",
     TOOL_CHAT[:2] + [{"role": "assistant", "content": "Let me check.", "tool_calls": [
         {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Bern\"}"}}]}])
case("llama3.1/date", "llama3.1", BASIC, date_string="03 Dec 2026")
case("llama3.1/tools", "llama3.1", TOOL_CHAT, tools=[WEATHER_TOOL], date_string="03 Dec 2026")
case("llama3.1/tools_in_system", "llama3.1", TOOL_CHAT, tools=[WEATHER_TOOL], date_string="03 Dec 2026",
     tools_in_user_message=False)
case("llama3.1/builtin_tools", "llama3.1", BASIC, builtin_tools=["brave_search", "code_interpreter", "wolfram_alpha"],
     date_string="03 Dec 2026")
case("llama3.2/date", "llama3.2", BASIC, date_string="03 Dec 2026")
case("llama3.2/tools", "llama3.2", TOOL_CHAT, tools=[WEATHER_TOOL], date_string="03 Dec 2026")
case("mistral-nemo/tools", "mistral-nemo", TOOL_CHAT[1:], tools=[WEATHER_TOOL])
case("mistral-nemo/not_alternating", "mistral-nemo", NOT_ALTERNATING)
case("llama3.1/two_tool_calls", "llama3.1",
     [TOOL_CHAT[1], {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL, TOOL_CALL]}],
     date_string="03 Dec 2026")

out = []
for name, t, messages, agp, tools, extra in CASES:
    with open(os.path.join(HERE, "templates", t + ".jinja"), encoding="utf-8") as f:
        template = f.read()
    kwargs = dict(SPECIAL[t], **extra)
    # Every variable the template sees: apply_chat_template adds tools and
    # documents (None when not given) and add_generation_prompt.
    variables = {"messages": messages, "tools": tools, "documents": None, "add_generation_prompt": agp, **kwargs}
    entry = {"name": name, "template": t + ".jinja", "variables": variables}
    try:
        entry["expected"] = tok.apply_chat_template(messages, tools=tools, chat_template=template, tokenize=False,
                                                    add_generation_prompt=agp, **kwargs)
    except jinja2.exceptions.TemplateError as e:
        entry["error"] = str(e)
    out.append(entry)

with open(os.path.join(HERE, "goldens.json"), "w", encoding="utf-8") as f:
    json.dump({"transformers": transformers.__version__, "jinja2": jinja2.__version__,
               "now": NOW.isoformat(), "cases": out}, f,
              ensure_ascii=False, indent=1)
    f.write("\n")
print(f"wrote {len(out)} cases")
