"""An independent model of the kernel's command-line tokenizer, for tests and fuzzing.

next_arg() (kernel/params.c) and skip_spaces() with the kernel's isspace() (lib/ctype.c:
\t \n \v \f \r, space, and byte 0xA0), over bytes. Written from the C semantics as
the positions where the kernel writes NULs into its buffer, not as the buffer simulation
pyinit/cmdline.py uses, so that the two can disagree when one of them is wrong.
"""
from __future__ import annotations

KERNEL_SPACES = frozenset(b" \t\n\v\f\r\xa0")


def model_next_arg(args: bytes) -> tuple[bytes, bytes | None, bytes]:
    quoted = args[:1] == b'"'
    word = args[1:] if quoted else args
    in_quote = quoted
    equals = 0
    i = 0
    while i < len(word):
        c = word[i]
        if c in KERNEL_SPACES and not in_quote:
            break
        if equals == 0 and c == ord("="):  # an '=' at position 0 does not count
            equals = i
        if c == ord('"'):
            in_quote = not in_quote
        i += 1
    nuls = {i}  # the word ends at i (a NUL, or the separator the kernel overwrites)
    value_start = None
    if equals:
        nuls.add(equals)
        value_start = equals + 1
        if word[value_start:value_start + 1] == b'"':
            value_start += 1
            if word[i - 1:i] == b'"':
                nuls.add(i - 1)
    if quoted and i > 0 and word[i - 1:i] == b'"':
        nuls.add(i - 1)

    def cstring(start: int) -> bytes:
        end = min(n for n in nuls if n >= start)
        return word[start:end]

    param = cstring(0)
    value = None if value_start is None else cstring(value_start)
    rest = word[i + 1:] if i < len(word) else b""
    while rest[:1] and rest[0] in KERNEL_SPACES:
        rest = rest[1:]
    return param, value, rest


def model_tokenize(line: bytes) -> tuple[list, list]:
    line = line.split(b"\0", 1)[0]
    while line[:1] and line[0] in KERNEL_SPACES:
        line = line[1:]
    params, init_args = [], []
    after_dashes = False
    while line:
        param, value, line = model_next_arg(line)
        if after_dashes:
            init_args.append(param if value is None else param + b"=" + value)
        elif param == b"--" and value is None:
            after_dashes = True
        else:
            params.append((param, value))
    return params, init_args


