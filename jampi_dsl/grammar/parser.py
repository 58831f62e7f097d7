"""Text → AST, with lark's LALR parser. Every lark failure becomes a ParseError
with a caret; nothing else escapes (see the fuzz test)."""

from __future__ import annotations

import ast as pyast
import re
import threading
from functools import lru_cache
from itertools import chain
from pathlib import Path

from lark import Lark, Token, Transformer
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.lexer import BasicLexer, Lexer, PatternStr, UnlessCallback
from lark.parse_tree_builder import ExpandSingleChild
from lark.parsers.lalr_analysis import Shift

from ..errors import JampiError, ParseError, Source, Span
from ..gcpause import paused_gc
from . import ast

_GRAMMAR = Path(__file__).with_name("lin.lark")

# Terminal names lark reports, spelled the way a user typed them.
_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "end of line",
    "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "EQUAL": "'='", "PLUS": "'+'", "MINUS": "'-'",
    "STAR": "'*'", "SLASH": "'/'", "AT": "'@'", "TRANSPOSE": "'.T'", "PARAM": "'param'",
    "TRUE": "'true'", "FALSE": "'false'", "$END": "end of input", "AND": "'and'", "OR": "'or'",
    "NOT": "'not'", "COMPARE": "a comparison", "__ANON_0": "'**'", "LBRACE": "'{'", "RBRACE": "'}'",
    "LSQB": "'['", "RSQB": "']'", "COLON": "':'", "FOR": "'for'", "IN": "'in'", "WHILE": "'while'",
    "IF": "'if'", "ELSE": "'else'", "DEF": "'def'", "RETURN": "'return'", "BREAK": "'break'",
}


def _start(part) -> tuple[int, int]:
    return (part.line, part.column) if isinstance(part, Token) else (part.span.line, part.span.column)


def _end(part) -> tuple[int, int]:
    return (part.end_line, part.end_column) if isinstance(part, Token) else (part.span.end_line, part.span.end_column)


def _unquote(text: str) -> str:
    return pyast.literal_eval(text)


def _binary(op: str):
    def build(self, children):
        left, *_, right = children  # `a - b` keeps its MINUS token in the middle
        return ast.BinOp(self._span(left, right), op, left, right)

    return build


class _ToAst(Transformer):
    """Builds the AST inline while the LALR parser reduces (no parse tree in between).

    Spans come from the first and last token or node of each rule, which is why the
    grammar names the punctuation that starts or ends a construct (PARAM, MINUS, LPAR, RPAR).
    """

    def __init__(self):
        super().__init__()
        self.source = Source("<none>", "")

    def _span(self, first, last) -> Span:
        (line, column), (end_line, end_column) = _start(first), _end(last)
        return Span(self.source, line, column, end_line, end_column)

    def _token_span(self, token: Token) -> Span:
        return Span(self.source, token.line, token.column, token.end_line, token.end_column)

    # statements
    def program(self, children):
        return tuple(c for c in children if isinstance(c, ast.Stmt))

    def param(self, children):
        keyword, name, value = children
        return ast.Param(self._span(keyword, value), str(name), value, self._token_span(name))

    def assign(self, children):
        name, value = children
        return ast.Assign(self._span(name, value), str(name), value, self._token_span(name))

    def multi_assign(self, children):
        *names, value = children
        return ast.MultiAssign(self._span(names[0], value), tuple(str(n) for n in names), value,
                               tuple(self._token_span(n) for n in names))

    def expr_stmt(self, children):
        return ast.ExprStmt(children[0].span, children[0])

    def slice_assign(self, children):
        name, _lsqb, rows, cols, _rsqb, value = children
        return ast.SliceAssign(self._span(name, value), str(name), rows, cols, value, self._token_span(name))

    def block(self, children):
        lbrace, rbrace = children[0], children[-1]
        statements = tuple(c for c in children[1:-1] if isinstance(c, ast.Stmt))
        return ast.Block(statements, self._span(lbrace, rbrace))

    def for_(self, children):
        keyword, var, _in, func, lpar, arguments, rpar, body = children
        if str(func) != "range":
            raise ParseError(f"a for loop runs over range(...), not {str(func)}(...)", self._token_span(func))
        call = self.call([func, lpar, arguments, rpar])
        return ast.For(self._span(keyword, body), str(var), self._token_span(var), call, body)

    def while_(self, children):
        keyword, cond, body = children
        return ast.While(self._span(keyword, body), cond, body)

    def if_(self, children):
        keyword, cond, body, rest = children
        cases, orelse = [(cond, body)], None
        while rest is not None:  # else-if chains arrive nested: flatten them
            kind, *parts = rest
            if kind == "else":
                orelse = parts[0]
                break
            cases.append((parts[0], parts[1]))
            rest = parts[2]
        last = (orelse or cases[-1][1])
        return ast.If(self._span(keyword, last), tuple(cases), orelse)

    def else_block(self, children):
        return ("else", children[1])

    def else_if(self, children):
        _else, _if, cond, body, rest = children
        return ("elif", cond, body, rest)

    def def_(self, children):
        keyword, name, _lpar, names, _rpar, body = children
        params = tuple(names or ())
        return ast.Def(self._span(keyword, body), str(name), tuple(str(p) for p in params),
                       tuple(self._token_span(p) for p in params), body, self._token_span(name))

    def names(self, children):
        return list(children)

    def return_(self, children):
        keyword, *values = children
        return ast.Return(self._span(keyword, values[-1]), tuple(values))

    def break_(self, children):
        return ast.Break(self._token_span(children[0]))

    # literals
    def number(self, children):
        return ast.Number(self._token_span(children[0]), float(children[0]))

    def neg_number(self, children):
        minus, number = children
        return ast.Number(self._span(minus, number), -float(number))

    def string(self, children):
        return ast.String(self._token_span(children[0]), _unquote(str(children[0])))

    def true(self, children):
        return ast.Bool(self._token_span(children[0]), True)

    def false(self, children):
        return ast.Bool(self._token_span(children[0]), False)

    def var(self, children):
        return ast.Var(self._token_span(children[0]), str(children[0]))

    def group(self, children):
        lpar, inner, rpar = children
        # The parentheses belong to the expression's text (print labels, carets). A copy with
        # one field changed, without dataclasses.replace's per-field introspection.
        grouped = object.__new__(type(inner))
        grouped.__dict__.update(inner.__dict__)
        object.__setattr__(grouped, "span", self._span(lpar, rpar))
        return grouped

    def tuple(self, children):
        items = tuple(c for c in children[1:-1])
        return ast.TupleLit(self._span(children[0], children[-1]), items)

    # operators
    add, sub, mul, div, matmul = (_binary(o) for o in "+-*/@")
    pow, and_, or_ = _binary("**"), _binary("and"), _binary("or")

    def compare(self, children):
        left, op, right = children
        return ast.BinOp(self._span(left, right), str(op), left, right)

    def not_(self, children):
        keyword, operand = children
        return ast.Not(self._span(keyword, operand), operand)

    def neg(self, children):
        minus, operand = children
        return ast.Neg(self._span(minus, operand), operand)

    def index(self, children):
        target, _lsqb, rows, cols, rsqb = children
        return ast.Index(self._span(target, rsqb), target, rows, cols)

    def slice(self, children):
        start, colon, stop = children
        first = start if start is not None else colon
        last = stop if stop is not None else colon
        return ast.SliceExpr(self._span(first, last), start, stop)

    def transpose(self, children):
        operand, mark = children
        return ast.Transpose(self._span(operand, mark), operand)

    # calls
    def call(self, children):
        name, _lpar, arguments, rpar = children
        args, keywords = [], []
        for arg in arguments or ():
            if isinstance(arg, ast.Keyword):
                keywords.append(arg)
            elif keywords:
                raise ParseError("positional argument after a keyword argument", arg.span)
            else:
                args.append(arg)
        return ast.Call(self._span(name, rpar), str(name), tuple(args), tuple(keywords), self._token_span(name))

    def arguments(self, children):
        return [c for c in children if c is not None]

    def keyword(self, children):
        name, value = children
        return ast.Keyword(str(name), value, self._span(name, value))


class _FastLexer(Lexer):
    """lark's basic lexer rules (same terminals, order and keyword callbacks), with
    one ``finditer`` over the text instead of a Python-level match per token: lexing
    was half the parse time of a 10,000-statement program. Without lark's contextual
    lexing, the keywords ``param``/``true``/``false`` are keywords everywhere, which
    is what LANGUAGE.md says (reserved); every other token is as before."""

    def __init__(self, conf):
        basic = BasicLexer(conf)
        terminals = basic.scanner.terminals  # after lark folded keywords into NAME (callbacks)
        alternatives = "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terminals)
        # Blanks before a token are skipped inside the same match (a third of all matches
        # were blanks): the grammar's ignored run of blank characters, a class without
        # line breaks, so line counting is unaffected. It also stays an alternative.
        blanks = next((t.pattern.to_regexp() for t in terminals
                       if t.name in conf.ignore and re.fullmatch(r"\[[^\]\n\r]*\]\+", t.pattern.to_regexp())), None)
        self.blanks = re.compile(blanks[:-1] + "*") if blanks else None
        self.pattern = re.compile(f"(?:{blanks[:-1]})*(?:{alternatives})" if blanks else alternatives)
        # lark folds keywords into NAME with a callback that regex-matches every name;
        # keywords that are plain strings are one dict lookup instead.
        self.keywords: dict[str, dict[str, str]] = {}
        self.callback = dict(basic.callback)
        for kind, callback in basic.callback.items():
            if isinstance(callback, UnlessCallback) and all(
                isinstance(t.pattern, PatternStr) and not t.pattern.flags for t in callback.scanner.terminals
            ):
                self.keywords[kind] = {t.pattern.value: t.name for t in callback.scanner.terminals}
                del self.callback[kind]
        self.ignore = frozenset(conf.ignore)
        self.allowed = frozenset(t.name for t in terminals) - self.ignore

    def _unexpected(self, text: str, pos: int, line: int, line_start: int) -> UnexpectedCharacters:
        if self.blanks is not None:
            pos = self.blanks.match(text, pos).end()  # the offending character, not the blanks before it
        return UnexpectedCharacters(text, pos, line, pos - line_start + 1, allowed=self.allowed)

    def lex(self, text: str, placeholder_kinds: frozenset = frozenset()):
        """Tokens of ``text``. A kind in ``placeholder_kinds`` (a token no rule keeps,
        such as ``=`` or ``@``) comes as a :class:`_Placeholder` instead of a Token."""
        ignore, callback, keywords, new_token = self.ignore, self.callback, self.keywords, str.__new__
        line, line_start, pos = 1, 0, 0
        for match in self.pattern.finditer(text):
            if match.start() != pos:
                raise self._unexpected(text, pos, line, line_start)
            kind = match.lastgroup
            start, pos = match.start(kind), match.end()
            value = match.group(kind)
            column = start - line_start + 1
            end_line, end_column = line, column + len(value)
            if "\n" in value:
                end_line = line + value.count("\n")
                line_start = start + value.rindex("\n") + 1
                end_column = pos - line_start + 1
            start_line, line = line, end_line
            if kind in ignore:
                continue
            if kind in keywords:
                kind = keywords[kind].get(value, kind)
            if kind in placeholder_kinds:
                yield _Placeholder(kind)
                continue
            # Token's own constructor is two Python calls deep; its slots set inline are not.
            token = new_token(_Token, value)
            token.type, token.value, token.start_pos, token.end_pos = kind, value, start, pos
            token.line, token.column, token.end_line, token.end_column = start_line, column, end_line, end_column
            yield callback[kind](token) if kind in callback else token
        if pos != len(text):
            raise self._unexpected(text, pos, line, line_start)


class _Token(Token):
    """A lark Token made without lark's constructor (see :meth:`_FastLexer.lex`)."""

    __slots__ = ()


class _Placeholder:
    """Stands for a token that no rule keeps (lark's child filters drop it unread)."""

    __slots__ = ("type",)

    def __init__(self, kind: str):
        self.type = kind


_END = _Placeholder("$END")  # the end of input, as the parse table names it


class _FastLALR:
    """lark's own LALR table and reduce callbacks, driven by one tight loop.

    lark's ``feed_token`` costs a method call, a Rule-keyed dict lookup and a
    state lookup per token and per reduction; here every table entry is decoded
    once, the unit rules of the expression ladder (``?sum: product``...) are plain
    state changes, and tokens no rule keeps are never built. The grammar, the
    table and the callbacks stay lark's. Any syntax error returns None and the
    caller parses again with lark itself, for lark's exact error."""

    def __init__(self, parser: Lark):
        inner = parser.parser.parser.parser  # ParsingFrontend -> LALR_Parser -> _Parser
        table, callbacks = inner.parse_table, inner.callbacks
        self.lexer: _FastLexer = parser.parser.lexer.lexer  # lark wraps a custom lexer class
        self.start = table.start_states["program"]
        self.end = table.end_states["program"]
        rules = {
            id(arg): arg
            for row in table.states.values()
            for action, arg in row.values()
            if action is not Shift
        }
        kept, dropped = set(), set()
        for rule in rules.values():
            for symbol in rule.expansion:
                if symbol.is_term:
                    (dropped if symbol.filter_out and _filters(callbacks[rule]) else kept).add(
                        symbol.name
                    )
        self.placeholder_kinds = frozenset(dropped - kept)
        # Per state: token kind -> (state to shift to, None) or (None, (size, callback, rule name)),
        # callback None for a unit rule whose value is its one child.
        self.rows: dict = {}
        for state, row in table.states.items():
            decoded = {}
            for kind, (action, arg) in row.items():
                if action is Shift:
                    decoded[kind] = (arg, None)
                else:
                    unit = isinstance(callbacks[arg], ExpandSingleChild) and len(arg.expansion) == 1
                    decoded[kind] = (
                        None,
                        (len(arg.expansion), None if unit else callbacks[arg], arg.origin.name),
                    )
            self.rows[state] = decoded

    def parse(self, text: str):
        rows, end = self.rows, self.end
        states, values = [self.start], []
        try:
            for token in chain(self.lexer.lex(text, self.placeholder_kinds), (_END,)):
                kind = token.type
                while True:
                    shift, reduce = rows[states[-1]][kind]
                    if shift is not None:  # ($END is never shifted: the start rule's reduction ends)
                        states.append(shift)
                        values.append(token)
                        break
                    size, callback, name = reduce
                    if callback is None:  # unit rule: same value, new state
                        states.pop()
                    elif size:
                        children = values[-size:]
                        del states[-size:], values[-size:]
                        values.append(callback(children))
                    else:  # an empty rule (a [-0:] slice would be everything)
                        values.append(callback([]))
                    states.append(rows[states[-1]][name][0])
                    if states[-1] == end:
                        return values[-1]
            return None  # input ended before the start rule did (lark reports it)
        except JampiError:
            raise  # a rule's own error (a callback): the same as lark would raise
        except Exception:  # noqa: BLE001 - a syntax error (no table entry): lark's own parse reports it
            return None


def _filters(callback) -> bool:
    """True for lark's child-filter wrappers: they read only the children a rule keeps."""
    return type(callback).__name__.startswith("ChildFilter")


_TRANSFORMER = _ToAst()
_LOCK = threading.Lock()  # the inline transformer carries the source being parsed


@lru_cache(maxsize=1)
def _fast() -> _FastLALR:
    return _FastLALR(_lark())


@lru_cache(maxsize=1)
def _lark() -> Lark:
    parser = Lark(
        _GRAMMAR.read_text(),
        start="program",
        parser="lalr",
        maybe_placeholders=True,
        transformer=_TRANSFORMER,
        lexer=_FastLexer,
    )
    _plain_rule_names(parser)
    return parser


def _plain_rule_names(parser: Lark) -> None:
    """After each reduction lark looks the rule's name up in the parse table; the
    names are lark Tokens, whose Python-level ``__eq__`` made those lookups a tenth
    of the parse time. Plain strings compare in C. Best effort: if lark's internals
    ever move, the parser just stays a little slower."""
    try:
        states = parser.parser.parser.parser.parse_table.states
        rules = {id(arg): arg for row in states.values() for _, arg in row.values() if not isinstance(arg, int)}
        for rule in rules.values():
            if type(rule.origin.name) is not str:
                rule.origin.name = str(rule.origin.name)
    except AttributeError:  # pragma: no cover - a lark version with another layout
        pass


def _describe_expected(expected) -> str:
    words = sorted({_TOKEN_WORDS.get(t, t.lower()) for t in expected if not t.startswith("__")})
    if not words:
        return ""
    if len(words) > 6:
        return ""
    return "; expected " + ", ".join(words)


def _parse_error(source: Source, err: UnexpectedInput) -> ParseError:
    line = getattr(err, "line", None) or 1
    column = getattr(err, "column", None) or 1
    if isinstance(err, UnexpectedCharacters):
        char = source.line(line)[column - 1 : column] or "?"
        message = f"unexpected character {char!r}"
        if char == ";":
            message += "; one statement per line, with no ';'"
    elif isinstance(err, UnexpectedToken):
        token = err.token
        if token.type == "$END":
            lines = source.text.splitlines() or [""]
            line, column = len(lines), len(lines[-1]) + 1
            message = "unexpected end of input"
        elif token.type == "_NL":
            message = "unexpected end of line"
        else:
            message = f"unexpected {_TOKEN_WORDS.get(token.type, repr(str(token)))}"
            if token.type in ("NAME", "NUMBER", "STRING"):
                message = f"unexpected {token.type.lower()} {str(token)!r}"
        message += _describe_expected(err.expected)
        if token.type == "$END" and "RBRACE" in err.expected:
            message = "unexpected end of input: a block is not closed (a '}' is missing)"
        elif token.type == "ELSE":
            message += "; `else` follows the closing brace of an `if` on the same line: `} else {`"
        elif token.type == "RBRACE" and "_NL" in err.expected:
            message += "; a closing brace stands on its own line"
    elif isinstance(err, UnexpectedEOF):
        lines = source.text.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        message = "unexpected end of input"
    else:  # pragma: no cover - lark has no other UnexpectedInput kinds today
        message = str(err).splitlines()[0]
    return ParseError(message, Span(source, line, column, line, column + 1))


def parse(text: str, name: str = "<string>") -> ast.Program:
    """Parse program text. Raises ParseError (a JampiError) on any syntax problem."""
    source = Source(name, text)
    # The grammar ends every statement with a newline; a last line without one is still a statement.
    body = text if text.endswith("\n") else text + "\n"
    try:
        with _LOCK, paused_gc():
            _TRANSFORMER.source = source
            statements = _fast().parse(body)
            if statements is None:
                statements = _lark().parse(body)
    except UnexpectedInput as err:
        raise _parse_error(source, err) from None
    except VisitError as err:  # lark wraps errors raised inside transformer callbacks
        if isinstance(err.orig_exc, JampiError):
            raise err.orig_exc from None
        raise ParseError(f"internal parser error: {err.orig_exc}") from err.orig_exc
    except LarkError as err:  # pragma: no cover - defensive: never let a raw lark error escape
        raise ParseError(str(err).splitlines()[0]) from None
    except RecursionError:  # pragma: no cover - defensive: the parser and its callbacks do not recurse
        raise ParseError("expression nested too deeply") from None
    return ast.Program(statements, source)


def parse_file(path: str | Path) -> ast.Program:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        from ..errors import InputError

        raise InputError(f"program file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        from ..errors import InputError

        raise InputError(f"cannot read program file {path}: {err}") from None
    return parse(text, str(path))
