"""Model mode's grammars, as TGI enforces them: a ``json``/``json_schema`` grammar becomes a regex with
outlines-core's JSON-schema converter (the router's step), a regex becomes an outlines-core ``Index`` over the
tokenizer's vocabulary (the server's step), cached per grammar string (TGI keeps an LRU of 32), and each step's
logits are masked by the index's allowed tokens.

A masked step must still end: for every index, a breadth-first search over its transitions, run backwards from
the final states once, gives each state its distance to a final state; the fallback token is the allowed one
whose next state is closest (ties: the lowest id), so a forced generation reaches a final state and then EOS."""

from __future__ import annotations

import collections
import json
import threading

from .bodies import TgiError

CACHE_SIZE = 32
# What TGI answers for a regex the server cannot build an FSM from (tgi-protocol.md §14).
BAD_REGEX = "Request failed during generation: Server error: "


class Guide:
    """One grammar's index with the distance of each state to acceptance."""

    def __init__(self, index, eos_id: int) -> None:
        self.index, self.eos_id = index, eos_id
        self.initial = index.get_initial_state()
        self.transitions = index.get_transitions()
        self.distance = _distances(self.transitions, index.get_final_states())

    def is_final(self, state) -> bool:
        return self.index.is_final_state(state)

    def allowed(self, state) -> list:
        return list(self.index.get_allowed_tokens(state) or ())

    def next_state(self, state, token_id: int):
        return self.transitions.get(state, {}).get(token_id)

    def usable(self, state, token_id: int) -> bool:
        """``token_id`` is allowed in ``state`` and does not lead where no final state can be reached."""
        if token_id == self.eos_id:
            return self.is_final(state)
        following = self.next_state(state, token_id)
        return following is not None and following in self.distance

    def fallback(self, state) -> int:
        """The allowed token that brings the generation closest to a final state; EOS once it is final."""
        if self.is_final(state):
            return self.eos_id
        best, best_key = self.eos_id, None
        for token_id, following in self.transitions.get(state, {}).items():
            if token_id == self.eos_id or following not in self.distance:
                continue
            key = (self.distance[following], token_id)
            if best_key is None or key < best_key:
                best, best_key = token_id, key
        return best


def _distances(transitions: dict, finals) -> dict:
    """State -> fewest tokens to a final state (states that cannot reach one are left out)."""
    backwards: dict = collections.defaultdict(set)
    for state, moves in transitions.items():
        for following in moves.values():
            backwards[following].add(state)
    distance = {state: 0 for state in finals}
    queue = collections.deque(distance)
    while queue:
        state = queue.popleft()
        for earlier in backwards.get(state, ()):
            if earlier not in distance:
                distance[earlier] = distance[state] + 1
                queue.append(earlier)
    return distance


def grammar_regex(grammar: dict) -> str:
    """A validated grammar (``{"type": "regex"|"json", "value"}``) -> the regex TGI's server masks with."""
    if grammar["type"] == "regex":
        return grammar["value"]
    from outlines_core.json_schema import build_regex_from_schema  # model mode only

    try:
        return build_regex_from_schema(json.dumps(grammar["value"]))
    except (ValueError, TypeError, RuntimeError) as exc:
        raise TgiError(f"Input validation error: grammar is not valid: cannot compile regex from schema: {exc}",
                       "validation") from None


class Guides:
    """The vocabulary and an LRU of ``Guide`` per regex; safe to use from worker threads."""

    def __init__(self, token_bytes: dict, eos_id: int) -> None:
        self.eos_id = eos_id
        self._token_bytes = {data: [i for i in ids if i != eos_id] for data, ids in token_bytes.items()}
        self._token_bytes = {data: ids for data, ids in self._token_bytes.items() if ids and data}
        self._vocabulary = None
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def guide(self, grammar: dict) -> Guide:
        regex = grammar_regex(grammar)
        with self._lock:
            found = self._cache.get(regex)
            if found is not None:
                self._cache.move_to_end(regex)
                return found
            guide = Guide(self._build_index(regex), self.eos_id)
            self._cache[regex] = guide
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return guide

    def _build_index(self, regex: str):
        from outlines_core import Index, Vocabulary  # model mode only

        if self._vocabulary is None:
            self._vocabulary = Vocabulary(self.eos_id, self._token_bytes)
        try:
            return Index(regex, self._vocabulary)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise TgiError(BAD_REGEX, "generation") from exc
