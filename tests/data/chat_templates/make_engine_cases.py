"""Makes engine_cases.json: small templates, one construct each, rendered by
the Jinja2 environment transformers builds for chat templates (same options,
filters and globals). keel's test (tests/jinja/test_engine.cpp) renders each
with the same variables and must produce the same text; a case whose
template fails in Jinja2 records "error" (the exception type) and must fail
in keel too.
Usage: python3 make_engine_cases.py      (needs transformers and jinja2)
"""
import json, os

import jinja2
import transformers
from transformers.utils.chat_template_utils import _compile_jinja_template

HERE = os.path.dirname(os.path.abspath(__file__))
V = {
    "s": "  Hello, World!  ",
    "n": 7,
    "f": 2.5,
    "xs": [3, 1, 2],
    "words": ["a", "b", "c"],
    "d": {"b": 1, "a": [1, 2.0, None, True], "c": {"x": "y"}},
    "msgs": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
             {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}],
    "t": True,
    "none": None,
    "uni": "héllo wörld ☕ 😀",
    "ctrl": "tab\tnl\nquote\"back\\slash\u0001",
    "empty": "",
}

CASES = [
    # text, output and whitespace control
    "plain text\nwith lines\n",
    "a {{ n }} b {{ s }} c",
    "{{ 'x' }}\n{{ 'y' }}\n",
    "{% if t %}\nyes\n{% endif %}\nafter",
    "  {% if t %}\n    indented\n  {% endif %}\nend",
    "a  {%- if t -%}  b  {%- endif -%}  c",
    "a\n  {{- n -}}\n  b",
    "{# comment #}x{# another\nmultiline #}\ny",
    "  {# lstripped comment #}\nz",
    "a {%+ if t %}b{% endif +%}\nc",
    "{% raw %}{{ not evaluated }} {% if %}{% endraw %}",
    "line\r\nwindows\rmac\n",
    "trailing newline kept once\n\n",
    "{% for x in xs %}\n  - {{ x }}\n{% endfor %}\n",
    "{%- for x in xs %}\n    {{- x }}\n{%- endfor %}",
    "x {% if t %}  {% endif %} y",
    # literals and operators
    "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}",
    "{{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-7 }} {{ 3.0 }} {{ 10 / 4 }} {{ 2 ** -1 }}",
    "{{ 'a' + 'b' }} {{ 'a' ~ 1 ~ none ~ t }} {{ 'ab' * 3 }} {{ [1] + [2] }}",
    "{{ 1 < 2 < 3 }} {{ 1 < 2 > 3 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ [1,2] == [1,2] }}",
    "{{ 'ell' in s }} {{ 2 in xs }} {{ 'a' in d }} {{ 'z' not in d }} {{ 5 not in xs }}",
    "{{ t and 'yes' }} {{ none or 'fallback' }} {{ not t }} {{ not none }} {{ 0 or '' or 'last' }}",
    "{{ 'a' if t else 'b' }} {{ 'a' if none else 'b' }} [{{ 'a' if none }}]",
    "{{ true }} {{ True }} {{ false }} {{ none }} {{ None }} {{ -n }} {{ +f }}",
    "{{ \"dq\" 'sq' }} {{ 'esc\\n\\t\\'\\\"\\\\' }} {{ '\\u00e9\\x41' }}",
    "{{ [1, 'a', none, true, 2.5, [3], {'k': 'v'}] }}",
    "{{ {'a': 1, 'b': [1, 2]} }} {{ d }}",
    "{{ ctrl }} {{ [ctrl, \"it's\", 'say \"hi\"'] }}",
    # attributes, items and slices
    "{{ d.b }} {{ d['b'] }} {{ d.c.x }} {{ d.missing }} {{ d['missing'] }} {{ xs[0] }} {{ xs[-1] }} {{ xs.1 }}",
    "{{ xs[1:] }} {{ xs[:-1] }} {{ xs[::-1] }} {{ xs[::2] }} {{ s[2:7] }} {{ uni[::-1] }} {{ uni[1] }} {{ words[5:] }}",
    "{{ msgs[0]['role'] }} {{ msgs[-1].content }} {{ msgs[1:]|length }}",
    # tests
    "{{ s is string }} {{ n is number }} {{ n is integer }} {{ f is float }} {{ t is boolean }} {{ none is none }}",
    "{{ d is mapping }} {{ xs is mapping }} {{ xs is iterable }} {{ s is iterable }} {{ n is iterable }} {{ xs is sequence }}",
    "{{ nope is defined }} {{ nope is undefined }} {{ d.x is defined }} {{ n is not none }} {{ t is true }} {{ t is false }}",
    "{{ n is odd }} {{ n is even }} {{ n is divisibleby 7 }} {{ n is divisibleby(2) }} {{ n is eq 7 }} {{ n is equalto 8 }}",
    "{{ 'abc' is lower }} {{ 'ABC' is upper }} {{ n is gt 3 }} {{ n is lt(3) }} {{ 2 is in xs }} {{ t is sameas true }}",
    "{{ nope is iterable }} {{ nope is sequence }} {{ none is string }} {{ msgs is sequence }} {{ d is sequence }}",
    # filters
    "{{ s|trim }}|{{ s|length }}|{{ uni|length }}|{{ xs|length }}|{{ d|length }}|{{ xs|count }}",
    "{{ xs|first }} {{ xs|last }} {{ words|join(', ') }} {{ xs|join }} {{ 'abc'|first }} {{ msgs|join(' ', attribute='role') }}",
    "{{ nope|default('dflt') }} {{ empty|default('dflt') }} {{ empty|default('dflt', true) }} {{ nope|d('x') }}",
    "{{ s|upper }} {{ s|lower }} {{ 'hello wORLD foo-bar'|title }} {{ 'hello World'|capitalize }}",
    "{{ s|replace('l', 'L') }} {{ s|replace('l', 'L', 2) }} {{ n|string + 'x' }} {{ '42'|int + 1 }} {{ '4.7'|int }} {{ 'x'|int }} {{ f|int }}",
    "{{ '3.25'|float }} {{ n|float }} {{ xs|list }} {{ 'ab'|list }} {{ d|list }} {{ -3|abs }}",
    "{{ d|items|list|length }} {% for k, v in d|items %}{{ k }}{{ v|length if v is iterable }}{% endfor %} {{ xs|sort }} {{ xs|sort(reverse=true) }} {{ words|reverse|list }} {{ [1,2,1,3,2]|unique|list }}",
    "{{ msgs|map(attribute='role')|list }} {{ words|map('upper')|list }} {{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }}",
    "{{ msgs|rejectattr('role', 'eq', 'user')|list|length }} {{ xs|select('odd')|list }} {{ xs|reject('odd')|list }} {{ [0, 1, '', 'a']|select|list }}",
    "{{ msgs|selectattr('content')|list|length }} {{ xs|sum }} {{ xs|min }} {{ xs|max }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.1|round(0, 'ceil') }}",
    "{{ 'a\nb\n\nc'|indent }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent(2, blank=true) }}",
    "{{ '<a href=\"x\">'|e }} {% for k, v in d|dictsort %}{{ k }}{% endfor %} {{ s|safe }}",
    # tojson (transformers' version: no HTML escaping, ensure_ascii=False)
    "{{ d|tojson }}",
    "{{ d|tojson(indent=2) }}",
    "{{ msgs[0]|tojson(indent=4) }} {{ []|tojson(indent=2) }} {{ {}|tojson(indent=2) }}",
    "{{ uni|tojson }} {{ ctrl|tojson }} {{ uni|tojson(ensure_ascii=true) }} {{ '<&>'|tojson }}",
    "{{ d|tojson(sort_keys=true) }} {{ d|tojson(separators=(',', ':')) }} {{ [1.0, 1e-05, 1e16, 123456789.125, -0.0]|tojson }}",
    "{{ 'x'|tojson }} {{ n|tojson }} {{ none|tojson }} {{ t|tojson }} {{ f|tojson }}",
    # string methods
    "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ '\\n\\nhi\\n'.lstrip('\\n') }}",
    "{{ 'a,b,,c'.split(',') }} {{ '  a  b c '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a</think>b'.split('</think>')[-1] }}",
    "{{ s.startswith('  He') }} {{ s.endswith('!  ') }} {{ 'abc'.startswith(('x', 'a')) }} {{ s.replace('o', '0') }}",
    "{{ s.upper() }} {{ s.lower() }} {{ 'hello world'.title() }} {{ 'aXb'.capitalize() }} {{ s.find('o') }} {{ s.count('l') }}",
    "{{ '-'.join(words) }} {{ '12'.isdigit() }} {{ 'a1'.isdigit() }} {{ ' '.isspace() }}",
    # dict methods
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.keys()|list }} {{ d.values()|list|length }}",
    "{{ d.get('b') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d.get('c').x }}",
    # for loops
    "{% for x in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }} {% endfor %}",
    "{% for x in xs %}{{ loop.previtem }}-{{ loop.nextitem }} {% endfor %}",
    "{% for x in xs %}{{ loop.cycle('odd', 'even') }} {% endfor %}",
    "{% for x in [] %}never{% else %}empty{% endfor %}",
    "{% for k in d %}{{ k }} {% endfor %}",
    "{% for c in 'héy' %}[{{ c }}]{% endfor %}",
    "{% for x in xs if x > 1 %}{{ x }}:{{ loop.index }}:{{ loop.length }} {% endfor %}",
    "{% for x in xs %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }} {% endfor %}{{ loop.index }}|{% endfor %}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }} {% endfor %}",
    "{% for m in msgs %}{% if loop.first %}[{% endif %}{{ m.role[0] }}{% if loop.last %}]{% endif %}{% endfor %}",
    "{% for x in range(3) %}{{ x }}{% endfor %} {{ range(2, 10, 3)|list }} {{ range(5, 0, -2)|list }}",
    "{% for x in nope %}never{% endfor %}ok",
    # set, scoping, namespace
    "{% set a = 1 %}{% set b = a + 1 %}{{ a }}{{ b }}",
    "{% set x = 1 %}{% for i in xs %}{% set x = i %}{% endfor %}{{ x }}",
    "{% set ns = namespace(x=1, found=false) %}{% for i in xs %}{% set ns.x = ns.x + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.x }} {{ ns.found }}",
    "{% set ns = namespace() %}{% set ns.i = 0 %}{% for m in msgs %}{% set ns.i = ns.i + 1 %}{% endfor %}{{ ns.i }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}",
    "{% set block %}inside {{ n }}{% endset %}[{{ block }}]",
    "{% set block | upper %}shout{% endset %}{{ block }}",
    "{% if t %}{% set inner = 'set in if' %}{% endif %}{{ inner }}",
    "{% set messages = msgs[1:] %}{{ messages|length }} {{ msgs|length }}",
    "{% set d2 = dict(a=1, b='x') %}{{ d2 }} {{ dict(d2, c=3) }}",
    # dict keys that are not strings (Seed-OSS's budget table)
    "{% set b = {0: 'zero', 1024: 'k', none: 'n', 2.5: 'f', 'x': 1} %}{{ b[0] }} {{ b[1024] }} {{ b[1.0] if 1 in b else 'no' }} {{ 0 in b }} {{ b }} {{ b|tojson }} {{ b.get(0) }} {{ b|list }} {% for k, v in b.items() %}{{ k }}={{ v }};{% endfor %}",
    # if / elif / else
    "{% if n > 10 %}big{% elif n > 5 %}medium{% else %}small{% endif %}",
    "{% if none %}a{% elif empty %}b{% elif xs %}c{% endif %}",
    # macros and filter blocks
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(punct='.', name='Cy') }}",
    "{% macro render(m) %}<{{ m.role }}>{{ m.content|trim }}{% endmacro %}{% for m in msgs %}{{ render(m) }}{% endfor %}",
    "{% filter upper %}loud {{ n }}{% endfilter %}",
    "{% generation %}tracked {{ n }}{% endgeneration %}",
    # globals
    "{{ raise_exception is defined }} {{ strftime_now is defined }} {{ namespace is defined }}",
    "{{ raise_exception('boom: ' ~ n) }}",
    # str.format; filters of None; unknown filters guarded by an if (Jinja's soft frames)
    "{{ '<{}|{}|{name}>{{x}}'.format('a', 'b', name='n') }} {{ '{1}{0}{1}'.format('a', 'b') }} {{ 'T{}'.format(none) }}",
    "{{ '{}{1}'.format('a', 'b') }}",
    "{{ none|map(attribute='a')|list }}{{ none|selectattr('a')|list }}{{ none|reject|list }}",
    "{% if false %}{{ x|nope }}{% endif %}ok",
    "{% if false %}{% set y = x is nopetest %}{% endif %}ok",
    "{% for a in [] %}{% if false %}{{ x|nope }}{% endif %}{% endfor %}ok",
    "{% if false %}x{% else %}{{ 1|nope }}{% endif %}",
    "{% if true %}{% for a in [1] %}{{ x|nope }}{% endfor %}{% endif %}",
    # errors (Jinja2 fails too)
    "{{ nope.attr }}",
    "{{ nope() }}",
    "{{ 1 + 'a' }}",
    "{{ none|length }}",
    "{% for x in 5 %}{% endfor %}",
    "{{ 1 // 0 }}",
    "{% set x = 1 %}{% set x.y = 2 %}",
    "{{ xs.nomethod() }}",
]


def main():
    out = []
    for src in CASES:
        entry = {"template": src}
        try:
            entry["expected"] = _compile_jinja_template(src).render(**V)
        except jinja2.exceptions.TemplateError as e:
            if type(e) is jinja2.exceptions.TemplateError:  # raise_exception
                entry["raised"] = str(e)
            else:
                entry["error"] = type(e).__name__
        except Exception as e:  # noqa: BLE001 - Python errors inside the template
            entry["error"] = type(e).__name__
        out.append(entry)
    with open(os.path.join(HERE, "engine_cases.json"), "w", encoding="utf-8") as f:
        json.dump({"transformers": transformers.__version__, "jinja2": jinja2.__version__, "variables": V,
                   "cases": out}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} cases")


main()
