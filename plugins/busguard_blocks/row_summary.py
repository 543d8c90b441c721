"""A row's (or a hall's) summary, from the peers a row or hall aggregator reads.

Why: the core DCIM should read one small block per row, not 77 requests per controller. A
row aggregator reads its controllers through ``busguard_peer`` entries and this block sums
them into outputs its own register map serves (map v2's output area, stable slots): totals
and per-phase kW and kVA, the worst power factor, the hottest and mean tap-off temperature,
the worst THD, the headroom to the busway's rating, the counts of tripped breakers and of the
peers' alarms by severity, latched and unacknowledged, the worst quality, and per controller
its power, its worst quality and which breakers are tripped (``{block}.{peer}.{breaker}.trip``
= 1: the list of tripped breakers, one flag each, named in the map's name table).

Stacked: a hall aggregator's ``busguard_peer`` entries bring in the row blocks' outputs as
``records`` (:func:`row_records` lists them), and a row_summary with ``rows = [...]`` combines
those totals and carries every per-controller record through under its own name, so the
hall's map shows every controller's power, quality and trips too.

Output quality codes (``.q``): 0 good, 1 stale, 2 bad, 3 not connected, the worst of the
points behind the figure (a peer that is down: 3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import Quality, Snapshot
from busguard.inputwatch import input_code

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig, DeviceConfig, SiteConfig

NAN = math.nan
PEER_DRIVER = "busguard_peer"
NAME_CHARS = 32  # the register map's name table: 16 words of ASCII
PHASES = ("l1", "l2", "l3")
SEVERITIES = ("info", "warning", "minor", "major", "critical")
# summed over the sources
SUMS = ("kw", "kw_l1", "kw_l2", "kw_l3", "kva", "kva_l1", "kva_l2", "kva_l3", "trips",
        *(f"alarms_{s}" for s in SEVERITIES), "latched", "unacked", "temp_n", "peers",
        "peers_down")
TOTALS = (*SUMS, "pf_min", "temp_max", "temp_mean", "thd_v_max", "thd_i_max", "headroom_kva",
          "q")
PER_PEER = ("kw", "q", "trips")
# meter quantity -> the total it adds to
METER_SUMS = {"power_kw": "kw", **{f"power_{p}_kw": f"kw_{p}" for p in PHASES},
              "apparent_power_kva": "kva",
              **{f"apparent_power_{p}_kva": f"kva_{p}" for p in PHASES}}
THD_V = tuple(f"thd_v_{p}_pct" for p in PHASES)
THD_I = tuple(f"thd_i_{p}_pct" for p in PHASES)
ALARM_SUMS = {**{f"alarms_{s}": f"alarms_{s}" for s in SEVERITIES},
              "alarms_latched": "latched", "alarms_unacked": "unacked"}
PEER_ALARMS = {  # peer_state -> (code, severity, words)
    2: ("BG-PEER-DOWN", Severity.MAJOR, "does not answer: its points are not connected"),
    3: ("BG-PEER-FINGERPRINT", Severity.MAJOR, "changed its map layout (fingerprint): its "
        "points are refused until `busguard peer-accept`"),
    4: ("BG-PEER-MAP", Severity.MAJOR, "does not serve a busguard map v2: its points are bad"),
    5: ("BG-PEER-MISSING", Severity.MINOR, "lacks records this aggregator asks for"),
}


def row_records(block: str, peers: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """The output names of a row_summary named ``block`` over ``peers`` ((peer entry, its
    breakers)): what a hall aggregator's busguard_peer entry lists as ``records``."""
    out = [f"{block}.{t}" for t in TOTALS]
    for peer, breakers in peers:
        out += [f"{block}.{peer}.{f}" for f in PER_PEER]
        out += [f"{block}.{peer}.{b}.trip" for b in breakers]
    return out


class _Source:
    """One peer entry as the block reads it: the image names of its points, by role."""

    def __init__(self, cfg: DeviceConfig) -> None:
        p = cfg.params
        n = cfg.name
        self.name = n
        quantities = set(p["points"] or ())
        every = not quantities
        meters = list(p["meters"])

        def pts(q: str) -> list[str]:
            return [f"{n}.{m}.{q}" for m in meters] if every or q in quantities else []

        self.sums = {total: pts(q) for q, total in METER_SUMS.items()}
        self.power = pts("power_kw")
        self.pf = pts("power_factor")
        self.thd_v = [x for q in THD_V for x in pts(q)]
        self.thd_i = [x for q in THD_I for x in pts(q)]
        probes = [f"{n}.{d}.temp_c" for d in p["probes"]]
        self.temps = probes or pts("temp_c")  # tap-off probes, else the meters' own
        self.breakers = [(b, f"{n}.{b}.trip_latched", f"{n}.{b}.shunt_trip")
                         for b in p["breakers"]]
        self.alarms = {f"{n}.{a}": t for a, t in ALARM_SUMS.items()} if p["alarms"] else {}
        self.state = f"{n}.peer_state"
        self.records = [f"{n}.{r}" for r in p["records"]]

    def inputs(self) -> list[str]:
        out = [x for v in self.sums.values() for x in v]
        out += self.pf + self.thd_v + self.thd_i + self.temps + list(self.alarms)
        out += [x for _b, a, b in self.breakers for x in (a, b)] + [self.state]
        return list(dict.fromkeys(out))


class RowSummary(Block):
    """Row and hall totals from busguard_peer entries (see the module docstring)."""

    type_name = "row_summary"
    failsafe_policy: ClassVar[str] = (
        "A point that is not good adds nothing to a total and makes the figure's quality "
        "(.q) the worst it saw; a peer that is down counts in peers_down, its .q reads 3 and "
        "its power and breakers' trip flags hold their last known values (an output never "
        "computed reads quality 1 in the map). BG-PEER-* alarms name the peer. On a fault "
        "every output is forced to NaN (quality 2).")
    codes: ClassVar[Mapping[str, str]] = {
        **{code: f"{sev.word}: a peer {words}" for code, sev, words in PEER_ALARMS.values()},
        **input_code("a peer entry's peer_state point", "not good (its driver stopped "
                                                           "reporting)"),
        "BG-ROW-OVERLOAD": "critical: the row's apparent power is above the busway rating "
                           "(headroom_kva < 0)",
    }
    params: ClassVar[Mapping[str, Param]] = {
        "peers": Param(list, item=str, default=(),
                       doc="busguard_peer entries of controllers: their meters, probes and "
                           "breakers are summed"),
        "rows": Param(list, item=str, default=(),
                      doc="busguard_peer entries of lower aggregators whose records are a "
                          "row_summary's outputs (row_records): combined, and per-controller "
                          "records carried through"),
        "rating_kva": Param(float, default=0.0, minval=0.0, unit="kVA",
                            doc="busway rating: headroom_kva = rating_kva - kva; 0: not set "
                                "(a hall: the smallest headroom of its rows)"),
    }

    def __init__(self, name: str, params: Mapping[str, Any],
                 peers: Sequence[DeviceConfig] = (), rows: Sequence[DeviceConfig] = ()) -> None:
        super().__init__(name, params)
        self.sources = [_Source(c) for c in peers]
        self.rows = [_Source(c) for c in rows]
        self.rating = float(params["rating_kva"])
        self._in = [x for s in (*self.sources, *self.rows) for x in s.inputs()]
        self._in += [r for s in self.rows for r in s.records]
        self._in = list(dict.fromkeys(self._in))
        # rows: the lower block's totals (prefix.total) and the records carried through
        self._row_totals: list[tuple[_Source, dict[str, str]]] = []
        self._carry: list[tuple[str, str]] = []  # (output name, input record)
        for s in self.rows:
            totals: dict[str, str] = {}
            for r in s.records:
                rec = r[len(s.name) + 1:]
                head, _, tail = rec.rpartition(".")
                if head and "." not in head and tail in TOTALS:
                    totals[tail] = r
                else:
                    self._carry.append((rec, r))
            self._row_totals.append((s, totals))
        self._outs: dict[str, float] = {f"{name}.{t}": NAN for t in TOTALS}
        for s in self.sources:
            self._outs.update({f"{name}.{s.name}.{f}": NAN for f in PER_PEER})
            self._outs.update({f"{name}.{s.name}.{b}.trip": NAN for b, _a, _c in s.breakers})
        self._outs.update({o: NAN for o, _r in self._carry})

    @classmethod
    def from_config(cls, config: BlockConfig, site: SiteConfig) -> Block:
        entries = {d.name: d for d in site.devices if d.driver == PEER_DRIVER}
        problems = []
        found: dict[str, list[DeviceConfig]] = {"peers": [], "rows": []}
        for opt in ("peers", "rows"):
            for i, n in enumerate(config.params[opt]):
                if n in entries:
                    found[opt].append(entries[n])
                else:
                    problems.append(ConfigProblem(
                        config.file, f"{config.path}.{opt}[{i}]",
                        f"no [[meter]] entry with driver = \"{PEER_DRIVER}\" named {n!r}; "
                        f"known: {', '.join(entries) or 'none'}"))
        if not problems and not (found["peers"] or found["rows"]):
            problems.append(config.problem("peers",
                                           "expected at least one busguard_peer entry in peers "
                                           "or rows"))
        for i, d in enumerate(found["rows"]):
            if not d.params["records"]:
                problems.append(ConfigProblem(
                    config.file, f"{config.path}.rows[{i}]",
                    f"entry {d.name!r} brings in no records; expected the lower "
                    f"row_summary's outputs (busguard_blocks.row_summary.row_records)"))
        if problems:
            raise ConfigError(problems)
        block = cls(config.name, config.params, found["peers"], found["rows"])
        long = [o for o in block.outputs() if len(o) > NAME_CHARS]
        if long:
            raise ConfigError([ConfigProblem(
                config.file, f"{config.path}.name", f"output {long[0]!r} is "
                f"{len(long[0])} characters; the register map's name table holds "
                f"{NAME_CHARS}: use shorter block, peer and breaker names")])
        return block

    def inputs(self) -> tuple[str, ...]:
        return tuple(self._in)

    def outputs(self) -> Mapping[str, float]:
        return dict(self._outs)

    # -- the scan --------------------------------------------------------------------------
    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        idx, vals, qual = inputs.index, inputs.values, inputs.quality
        res = BlockResult()
        out = res.outputs
        b = self.name
        acc = {k: 0.0 for k in SUMS}
        worst_q = 0
        pf_min = temp_max = thd_v = thd_i = NAN
        temp_sum = 0.0
        headroom = NAN

        def good(names: Sequence[str]) -> tuple[list[float], int]:
            got, wq = [], 0
            for n in names:
                i = idx[n]
                q = qual[i]
                if q == 0 or q == 1:  # a stale value still counts; its quality shows
                    got.append(vals[i])
                if q > wq:
                    wq = q
            return [v for v in got if v == v], wq

        for s in self.sources:
            acc["peers"] += 1
            st = self._state(inputs, s, res)
            if st:
                self._peer_alarm(res, s.name, st)
            down = st in PEER_ALARMS and st != 5
            acc["peers_down"] += down
            pw, pq = good(s.power)
            out[f"{b}.{s.name}.kw"] = sum(pw) if pw and not down else NAN
            out[f"{b}.{s.name}.q"] = float(max(pq, 3 if st == 2 else 2 if down else 0))
            worst_q = max(worst_q, int(out[f"{b}.{s.name}.q"]))
            for total, names in s.sums.items():
                vs, _ = good(names)
                acc[total] += sum(vs)
            vs, _ = good(s.pf)
            if vs:
                m = min(abs(v) for v in vs)
                pf_min = m if not pf_min <= m else pf_min
            vs, _ = good(s.thd_v)
            if vs:
                thd_v = max(vs) if not thd_v >= max(vs) else thd_v
            vs, _ = good(s.thd_i)
            if vs:
                thd_i = max(vs) if not thd_i >= max(vs) else thd_i
            vs, _ = good(s.temps)
            if vs:
                temp_max = max(vs) if not temp_max >= max(vs) else temp_max
                temp_sum += sum(vs)
                acc["temp_n"] += len(vs)
            trips = 0
            for brk, latched, shunt in s.breakers:
                i, j = idx[latched], idx[shunt]
                if qual[i] <= 1:
                    t = 1.0 if vals[i] >= 0.5 or (qual[j] <= 1 and vals[j] >= 0.5) else 0.0
                    trips += int(t)
                else:
                    t = NAN
                out[f"{b}.{s.name}.{brk}.trip"] = t
            out[f"{b}.{s.name}.trips"] = float(trips)
            acc["trips"] += trips
            for n, total in s.alarms.items():
                i = idx[n]
                if qual[i] <= 1:
                    acc[total] += vals[i]
        temp_w = temp_sum
        for s, totals in self._row_totals:  # peers: the rows' own counts of controllers
            st = self._state(inputs, s, res)
            if st:
                self._peer_alarm(res, s.name, st)
            if st in PEER_ALARMS and st != 5:
                acc["peers_down"] += 1
                worst_q = max(worst_q, 3 if st == 2 else 2)
            for t, rec in totals.items():
                i = idx[rec]
                q, v = qual[i], vals[i]
                if q > 1 or v != v:
                    worst_q = max(worst_q, q)
                    continue
                if t == "q":
                    worst_q = max(worst_q, int(v))
                elif t in SUMS and t != "temp_n":
                    acc[t] += v
                elif t == "pf_min":
                    pf_min = v if not pf_min <= v else pf_min
                elif t == "temp_max":
                    temp_max = v if not temp_max >= v else temp_max
                elif t == "thd_v_max":
                    thd_v = v if not thd_v >= v else thd_v
                elif t == "thd_i_max":
                    thd_i = v if not thd_i >= v else thd_i
                elif t == "headroom_kva":
                    headroom = v if not headroom <= v else headroom
            n_rec, m_rec = totals.get("temp_n"), totals.get("temp_mean")
            if n_rec and m_rec and qual[idx[n_rec]] <= 1 and qual[idx[m_rec]] <= 1 \
                    and vals[idx[n_rec]] > 0:
                acc["temp_n"] += vals[idx[n_rec]]
                temp_w += vals[idx[n_rec]] * vals[idx[m_rec]]
        for o, rec in self._carry:
            i = idx[rec]
            q, v = qual[i], vals[i]
            if o.endswith(".q"):
                out[o] = float(max(q, v)) if v == v else float(max(q, 3))
            else:
                out[o] = v if q <= 1 else NAN
        for k in SUMS:
            out[f"{b}.{k}"] = acc[k]
        out[f"{b}.pf_min"] = pf_min
        out[f"{b}.temp_max"] = temp_max
        out[f"{b}.temp_mean"] = temp_w / acc["temp_n"] if acc["temp_n"] else NAN
        out[f"{b}.thd_v_max"] = thd_v
        out[f"{b}.thd_i_max"] = thd_i
        if self.rating > 0:
            headroom = self.rating - acc["kva"]
        out[f"{b}.headroom_kva"] = headroom
        out[f"{b}.q"] = float(worst_q)
        if headroom < 0:
            res.alarms.append(AlarmCondition(
                "overload", Severity.CRITICAL, "BG-ROW-OVERLOAD",
                f"{b}: {acc['kva']:.1f} kVA is above the busway rating {self.rating:g} kVA",
                values={"kva": acc["kva"], "rating_kva": self.rating}))
        for k in [k for k, x in out.items() if x != x]:  # unknown now: the output holds
            del out[k]
        return res

    @staticmethod
    def _state(inputs: Snapshot, s: _Source, res: BlockResult) -> int:
        i = inputs.index[s.state]
        q = inputs.quality[i]
        if q == 0:
            return int(inputs.values[i])
        res.alarms.append(AlarmCondition(f"input:{s.name}", Severity.WARNING, "BG-INPUT",
                                         f"{s.state} is {Quality(q).word}: the peer driver "
                                         f"is not reporting", device=s.name))
        return 1

    @staticmethod
    def _peer_alarm(res: BlockResult, peer: str, state: int) -> None:
        alarm = PEER_ALARMS.get(state)
        if alarm is not None:
            code, sev, words = alarm
            res.alarms.append(AlarmCondition(f"peer:{peer}", sev, code,
                                             f"peer {peer} {words}", device=peer))
