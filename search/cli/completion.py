"""Shell completion scripts for bash and zsh, written from the argument parser.

``eval "$(ftsweep completion bash)"`` in ~/.bashrc (or ``zsh`` in ~/.zshrc)
completes commands, their flags, the values of flags with choices, and file
names elsewhere. Generated from the parser itself, so a new flag completes
without anyone editing a script.
"""

from __future__ import annotations

import argparse
import re
import shlex

SHELLS = ("bash", "zsh")
# Flags and arguments whose values are files or folders; other values get no completion.
PATHS = {"results", "storage", "out", "space", "data", "model", "images", "sweep"}


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    if shell == "bash":
        return _bash(parser)
    if shell == "zsh":
        return _zsh(parser)
    raise ValueError(f"unknown shell {shell!r}")


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Command name -> its parser; nested ones (``weights fetch``) as "weights fetch"."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _commands(sub)
                found[name] = sub
                found.update({f"{name} {inner}": p for inner, p in nested.items()})
    return found


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Command name -> its one-line help, for the parser's own subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings]


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _bash(parser: argparse.ArgumentParser) -> str:
    """The bash script. Long: most of it is the script's text, kept whole to read as bash."""
    commands = _commands(parser)
    top = " ".join(name for name in commands if " " not in name)
    cases = []
    for name, sub in commands.items():
        flags = " ".join(s for a in _options(sub) for s in a.option_strings)
        # Choices of a positional (completion's shell) stand in for the subcommands.
        chosen = [a for a in sub._actions if not a.option_strings and a.choices]
        nested = " ".join(_helps(sub)) or " ".join(str(c) for a in chosen for c in a.choices or ())
        values = []
        for action in _options(sub):
            if action.choices:
                words = " ".join(str(c) for c in action.choices)
                values.append(f"        {'|'.join(action.option_strings)}) words={q(words)};;")
            elif _takes_value(action) and action.nargs != "?":
                words = "" if action.dest in PATHS else "__none__"
                values.append(f"        {'|'.join(action.option_strings)}) words={q(words)};;")
        value_case = "\n".join(values)
        cases.append(
            f"    {q(name)})\n"
            f"      flags={q(flags)}; subcommands={q(nested)}\n"
            f'      case "$prev" in\n{value_case}\n      esac;;'
            if values
            else f"    {q(name)})\n      flags={q(flags)}; subcommands={q(nested)};;"
        )
    body = "\n".join(cases)
    return f"""# bash completion for ftsweep: eval "$(ftsweep completion bash)"
_ftsweep() {{
  local cur prev command="" flags="" subcommands="" words="-" i
  cur="${{COMP_WORDS[COMP_CWORD]}}"
  prev="${{COMP_WORDS[COMP_CWORD-1]}}"
  # The command: the words before the cursor that name one ("weights fetch").
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "${{COMP_WORDS[i]}}" in
      -*) ;;
      *) if [[ -z "$command" && " {top} " == *" ${{COMP_WORDS[i]}} "* ]]; then
           command="${{COMP_WORDS[i]}}"
         elif [[ -n "$command" &&
                 " $(_ftsweep_sub "$command") " == *" ${{COMP_WORDS[i]}} "* ]]; then
           command="$command ${{COMP_WORDS[i]}}"
         fi;;
    esac
  done
  if [[ -z "$command" ]]; then
    COMPREPLY=($(compgen -W "{top} --help" -- "$cur"))
    return
  fi
  case "$command" in
{body}
  esac
  if [[ "$words" == "__none__" ]]; then  # a number, a name: nothing to offer
    COMPREPLY=()
  elif [[ "$words" != "-" ]]; then  # a flag's value: its choices, or a file name
    if [[ -n "$words" ]]; then COMPREPLY=($(compgen -W "$words" -- "$cur")); else
      COMPREPLY=($(compgen -f -- "$cur")); fi
  elif [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif [[ -n "$subcommands" ]]; then
    COMPREPLY=($(compgen -W "$subcommands" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}}
_ftsweep_sub() {{
  case "$1" in
{_bash_subs(commands)}
  esac
}}
complete -o filenames -o bashdefault -F _ftsweep ftsweep
"""


def _bash_subs(commands: dict[str, argparse.ArgumentParser]) -> str:
    lines = []
    for name, sub in commands.items():
        nested = " ".join(_helps(sub))
        if nested:
            lines.append(f"    {q(name)}) echo {q(nested)};;")
    return "\n".join(lines) or "    *) ;;"


def _zsh(parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    helps = _helps(parser)
    described = "\n".join(f"    {q(name + ':' + _zsh_text(text))}" for name, text in helps.items())
    functions, cases = [], []
    for name, sub in commands.items():
        function = "_ftsweep_" + name.replace(" ", "_")
        specs = [q(spec) for action in _options(sub) for spec in _zsh_specs(action)]
        nested = _helps(sub)
        if nested:
            inner = " ".join(q(f"{n}:{_zsh_text(h)}") for n, h in nested.items())
            specs.append(q("1:command:->sub"))
            specs.append(q("*::arg:->args"))
            tail = (
                f"  case $state in\n    sub) local -a inner=({inner}); "
                f"_describe command inner;;\n"
                f"    args) (( $+functions[{function}_$words[1]] )) && {function}_$words[1];;\n"
                "  esac"
            )
        else:
            for position, action in enumerate(
                (a for a in sub._actions if not a.option_strings), start=1
            ):
                many = action.nargs in ("+", "*")
                label = _zsh_text(action.help or action.dest)
                values = (
                    "(" + " ".join(map(str, action.choices)) + ")" if action.choices else "_files"
                )
                specs.append(q(f"{'*' if many else position}:{label}:{values}"))
            tail = ""
        functions.append(
            f"{function}() {{\n  _arguments -s \\\n    "
            + " \\\n    ".join(specs)
            + ("\n" + tail if tail else "")
            + "\n}"
        )
        if " " not in name:
            cases.append(f"    {q(name)}) {function};;")
    return (
        "#compdef ftsweep\n"
        '# zsh completion for ftsweep: eval "$(ftsweep completion zsh)"\n'
        "# (after compinit), or save it as _ftsweep in a folder of $fpath.\n"
        + "\n".join(functions)
        + "\n_ftsweep() {\n"
        "  local state line\n"
        "  if (( CURRENT == 2 )); then\n"
        f"    local -a commands=(\n{described}\n    )\n"
        "    _describe command commands\n"
        "    return\n"
        "  fi\n"
        "  shift words; (( CURRENT-- ))\n"
        "  case $words[1] in\n" + "\n".join(cases) + "\n  esac\n}\n"
        'if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _ftsweep "$@"; '
        "else compdef _ftsweep ftsweep; fi\n"
    )


def _zsh_specs(action: argparse.Action) -> list[str]:
    """_arguments specs of a flag: one per spelling, each excluding the others."""
    names = action.option_strings
    exclusive = f"({' '.join(names)})" if len(names) > 1 else ""
    text = f"[{_zsh_text(action.help or '')}]"
    value = ""
    if _takes_value(action):
        metavar = _zsh_text(str(action.metavar or action.dest))
        if action.choices:
            value = f":{metavar}:({' '.join(str(c) for c in action.choices)})"
        else:
            value = f":{metavar}:{'_files' if action.dest in PATHS else ' '}"
        if action.nargs == "?":
            value = ":" + value
    return [f"{exclusive}{name}{text}{value}" for name in names]


def _zsh_text(text: str) -> str:
    """Help text inside a zsh spec: its first sentence, brackets as parentheses and
    colons escaped (the spec syntax uses both)."""
    text = re.split(r"\. (?=[A-Z])|; ", text)[0]
    for old, new in (("\\", "/"), ("[", "("), ("]", ")"), (":", "\\:")):
        text = text.replace(old, new)
    return text


def q(text: str) -> str:
    return shlex.quote(text)
