"""What `asi-node chain deploy` sets up: the DAO's parameters and its initial token holders.

Two profiles. `production` (the default) has the figures contracts/README.md explains:
a one-day voting delay, a one-week vote, a two-day timelock, a proposal threshold of
0.25% of the supply, a 4% quorum, a one-day extension when quorum comes late, and the
supply minted to the holders of a distribution file; `check_production` refuses what
would make the DAO unsafe (no guardian, no distribution, a zero threshold, a timelock
under a day). `dev` keeps the fast test parameters, the deployer holding the supply and
being the guardian: for tests, the demo's embedded chain and a local anvil.

Voting delay, period and late-quorum extension count in the token's clock (ERC-6372):
blocks, or seconds on the timestamp clock (for L2s). The timelock always counts seconds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path

from eth_utils.address import is_checksum_address, to_checksum_address

DECIMALS = 18
TOKEN = 10**DECIMALS
MAX_SUPPLY = 2**208 - 1  # ERC20Votes checkpoints hold uint208
DEV_SUPPLY = 1_000_000 * TOKEN  # what the deployer holds under the dev profile
ETHEREUM_BLOCK_S = 12  # a mainnet slot: converts durations into blocks
DAY_S = 86_400
MIN_TIMELOCK_S = DAY_S
UNITS_S = {"s": 1, "m": 60, "h": 3_600, "d": DAY_S, "w": 7 * DAY_S}


class Clock(StrEnum):
    """The token's ERC-6372 clock, which the Governor's delays and periods count in."""

    BLOCKNUMBER = "blocknumber"
    TIMESTAMP = "timestamp"


class Profile(StrEnum):
    PRODUCTION = "production"
    DEV = "dev"


@dataclass(frozen=True)
class DaoParams:
    """The Governor's and timelock's settings. `voting_delay`, `voting_period` and
    `late_quorum_extension` are in `clock` units; `proposal_threshold` in token base
    units (10**18 per token)."""

    clock: Clock
    voting_delay: int
    voting_period: int
    timelock_delay_s: int
    proposal_threshold: int
    quorum_percent: int
    late_quorum_extension: int

    def __post_init__(self) -> None:
        if self.voting_delay < 0 or self.voting_delay >= 2**48:
            raise ValueError(f"voting delay {self.voting_delay} is outside 0..2**48-1")
        if not 0 < self.voting_period < 2**32:
            raise ValueError(f"voting period {self.voting_period} is outside 1..2**32-1")
        if self.timelock_delay_s < 0:
            raise ValueError("the timelock delay cannot be negative")
        if self.proposal_threshold < 0:
            raise ValueError("the proposal threshold cannot be negative")
        if not 1 <= self.quorum_percent <= 100:
            raise ValueError(f"quorum {self.quorum_percent}% is outside 1..100%")
        if not 0 <= self.late_quorum_extension < 2**48:
            raise ValueError("the late-quorum extension is outside 0..2**48-1")


# Today's fast test parameters: a vote of 50 blocks opening after one, a minute's timelock.
DEV_PARAMS = DaoParams(
    clock=Clock.BLOCKNUMBER,
    voting_delay=1,
    voting_period=50,
    timelock_delay_s=60,
    proposal_threshold=0,
    quorum_percent=4,
    late_quorum_extension=0,
)
PRODUCTION_DELAYS_S = {
    "voting_delay": DAY_S,
    "voting_period": 7 * DAY_S,
    "timelock_delay": 2 * DAY_S,
    "late_quorum_extension": DAY_S,
}
PRODUCTION_THRESHOLD = "0.25%"  # of the distributed supply
PRODUCTION_QUORUM_PERCENT = 4


@dataclass(frozen=True)
class Allocation:
    """One holder of the initial distribution: a checksummed address and base units."""

    address: str
    amount: int


def in_clock_units(seconds: int, clock: Clock, block_s: float = ETHEREUM_BLOCK_S) -> int:
    """A duration in the clock's units: seconds, or blocks (rounded up) of `block_s`."""
    if clock is Clock.TIMESTAMP:
        return seconds
    return math.ceil(seconds / block_s)


def parse_duration(text: str, clock: Clock | None, block_s: float = ETHEREUM_BLOCK_S) -> int:
    """`30s`, `10m`, `12h`, `2d`, `1w` as clock units (see `in_clock_units`), or a bare
    integer taken as clock units already (blocks or seconds). `clock` None: seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: give an integer, or one with s/m/h/d/w")
    number, unit = int(match.group(1)), match.group(2)
    if not unit:
        return number
    seconds = number * UNITS_S[unit]
    return seconds if clock is None else in_clock_units(seconds, clock, block_s)


def parse_threshold(text: str, supply: int) -> int:
    """A proposal threshold: `0.25%` of `supply`, or a token amount (`25000`, `0.5`)."""
    text = text.strip()
    if text.endswith("%"):
        percent = _decimal(text[:-1], "proposal threshold")
        if not 0 <= percent <= 100:
            raise ValueError(f"proposal threshold {text} is outside 0..100%")
        return int(Decimal(supply) * percent / 100)
    return token_units(text, "proposal threshold", allow_zero=True)


def production_params(
    *,
    clock: Clock = Clock.BLOCKNUMBER,
    block_s: float = ETHEREUM_BLOCK_S,
    supply: int,
) -> DaoParams:
    """The production defaults (contracts/README.md says why) for a token of `supply`."""
    return DaoParams(
        clock=clock,
        voting_delay=in_clock_units(PRODUCTION_DELAYS_S["voting_delay"], clock, block_s),
        voting_period=in_clock_units(PRODUCTION_DELAYS_S["voting_period"], clock, block_s),
        timelock_delay_s=PRODUCTION_DELAYS_S["timelock_delay"],
        proposal_threshold=parse_threshold(PRODUCTION_THRESHOLD, supply),
        quorum_percent=PRODUCTION_QUORUM_PERCENT,
        late_quorum_extension=in_clock_units(
            PRODUCTION_DELAYS_S["late_quorum_extension"], clock, block_s
        ),
    )


def check_production(
    params: DaoParams, guardian: str | None, distribution: tuple[Allocation, ...]
) -> None:
    """Refuse a production DAO that is unsafe; ValueError names the option to fix."""
    if not guardian:
        raise ValueError(
            "--guardian ADDRESS is required: the guardian (a multisig) pauses campaigns and "
            "cancels hostile proposals before they execute (--profile dev for a test chain)"
        )
    if not distribution:
        raise ValueError(
            "--distribution FILE is required: the initial token holders (address,amount); "
            "the deployer keeps no tokens outside --profile dev"
        )
    if params.proposal_threshold <= 0:
        raise ValueError(
            "--proposal-threshold must be above zero: with no threshold anyone can flood "
            "the DAO with proposals"
        )
    if params.timelock_delay_s < MIN_TIMELOCK_S:
        raise ValueError(
            f"--timelock-delay must be at least one day ({MIN_TIMELOCK_S} s), got "
            f"{params.timelock_delay_s} s: holders need time to react to a passed proposal"
        )
    total = sum(a.amount for a in distribution)
    if params.proposal_threshold > total:
        raise ValueError(
            f"--proposal-threshold {params.proposal_threshold} exceeds the distributed supply "
            f"{total}: nobody could propose"
        )


def read_distribution(path: Path) -> tuple[Allocation, ...]:
    """The initial holders from a JSON or CSV file; ValueError says what is wrong where.

    JSON: `{"0xADDRESS": "1000", ...}` or `[{"address": "0x...", "amount": "1000"}, ...]`.
    CSV: `address,amount` rows (a header row with those names is allowed). Amounts are
    whole tokens (up to 18 decimal places). Each address is a valid 20-byte address
    (EIP-55 checksummed if written in mixed case), not the zero address, and appears once;
    each amount is above zero; the total fits ERC20Votes (below 2**208 base units).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the distribution file: {exc.strerror}") from None
    rows = _json_rows(text, path) if text.lstrip().startswith(("{", "[")) else _csv_rows(text, path)
    if not rows:
        raise ValueError(f"{path}: the distribution names no holders")
    seen: set[str] = set()
    found = []
    for where, address, amount in rows:
        checked = parse_address(address, f"{path}: {where}")
        if checked in seen:
            raise ValueError(f"{path}: {where}: {checked} appears more than once")
        seen.add(checked)
        units = token_units(amount, f"{path}: {where}: amount", allow_zero=False)
        found.append(Allocation(checked, units))
    total = sum(a.amount for a in found)
    if total > MAX_SUPPLY:
        raise ValueError(f"{path}: the total {total} exceeds ERC20Votes' supply cap 2**208-1")
    return tuple(found)


def token_units(text: object, what: str, *, allow_zero: bool) -> int:
    """A decimal token amount in base units (18 decimals), exactly."""
    value = _decimal(text, what)
    units = value * TOKEN
    if units != units.to_integral_value():
        raise ValueError(f"{what} {text!r} has more than {DECIMALS} decimal places")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} {text!r} must be {'' if allow_zero else 'above '}zero")
    return int(units)


def _decimal(text: object, what: str) -> Decimal:
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"{what} {text!r} is not a number (write amounts as strings or integers)")
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{what} {text!r} is not a number")
    return value


def _json_rows(text: str, path: Path) -> list[tuple[str, str, object]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if isinstance(data, dict):
        return [(f"holder {k}", str(k), v) for k, v in data.items()]
    if isinstance(data, list):
        rows: list[tuple[str, str, object]] = []
        for i, item in enumerate(data):
            if not isinstance(item, dict) or set(item) != {"address", "amount"}:
                raise ValueError(f"{path}: entry {i} is not {{'address': ..., 'amount': ...}}")
            rows.append((f"entry {i}", str(item["address"]), item["amount"]))
        return rows
    raise ValueError(f"{path}: expected an object or a list of holders")


def _csv_rows(text: str, path: Path) -> list[tuple[str, str, object]]:
    rows: list[tuple[str, str, object]] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and [c.lower() for c in cells] == ["address", "amount"]:
            continue
        if len(cells) != 2:
            raise ValueError(
                f"{path}: line {number}: expected address,amount; got {len(cells)} fields"
            )
        rows.append((f"line {number}", cells[0], cells[1]))
    return rows


def parse_address(text: str, where: str) -> str:
    """`text` as a checksummed address; ValueError unless it is a valid, non-zero one."""
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", text):
        raise ValueError(f"{where}: {text!r} is not a 20-byte 0x address")
    mixed = text[2:] != text[2:].lower() and text[2:] != text[2:].upper()
    if mixed and not is_checksum_address(text):
        raise ValueError(f"{where}: {text} has a wrong EIP-55 checksum (a typo?)")
    if int(text, 16) == 0:
        raise ValueError(f"{where}: the zero address cannot hold tokens")
    return str(to_checksum_address(text))
