"""A deterministic generator of a realistic, signed Nostr network for the offline demo.

`generate(seed, now)` returns the same events for the same arguments: users with
power-law popularity (user 0 is the most followed and most engaged-with creator,
`demo_pubkey`), profiles, notes and threads (NIP-10 marked and positional replies,
NIP-22 comments), reactions, reposts, quotes, NIP-27 mentions, contact lists with
churn (ties and late lists included), long-form articles with versions, zaps with
real signed BOLT11 invoices (anonymous zaps, one payment hash paid twice), NIP-09
deletions (own, early, foreign) and a few invalid events. Times cover the ~400
days before `now`, denser towards `now`, so every rolling window has data.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from libs.nostr.bech32 import nevent_encode, nprofile_encode, npub_encode
from libs.nostr.invoices import decode_invoice
from libs.nostr.keys import privkey_from_seed
from tools.demo.signing import InvoiceSigner, Signer

DAY = 86_400
SPAN = 400 * DAY
RELAY_HINT = "wss://relay.canal.demo"
EMOJI = ["🤙", "❤️", "🔥", "⚡", "😂", "🫂", "👀", ":soapbox:"]
SATS = [21, 69, 100, 210, 500, 1_000, 2_100, 5_000, 10_000, 21_000, 100_000]
SATS_WEIGHTS = [18, 8, 16, 10, 12, 12, 8, 6, 5, 3, 1]
FIRST = ["ada", "bea", "cyd", "dax", "eli", "fay", "gus", "hal", "ivy", "jem", "kai", "lou", "max", "nia",
         "oak", "pip", "quin", "rae", "sol", "tay", "uma", "vic", "wren", "xan", "yul", "zed"]
LAST = ["sats", "relay", "zap", "node", "pleb", "block", "hash", "key", "note", "chain", "seed", "spark"]
WORDS = ["nostr", "relay", "zap", "sats", "bitcoin", "lightning", "note", "client", "key", "sign", "verify", "freedom", "protocol", "signal", "noise", "coffee", "morning", "build", "ship", "code", "design", "open", "source", "market", "music", "photo", "garden", "winter", "summer", "city", "mountain", "river", "book", "idea", "thread", "question", "answer", "today", "tomorrow", "weekend", "meetup", "podcast"]
Event = dict[str, Any]


@dataclass
class _User:
    idx: int
    signer: Signer
    name: str
    weight: float  # popularity: how often others follow, react, zap, reply
    notes: list[Event] = field(default_factory=list)
    articles: list[Event] = field(default_factory=list)

    @property
    def pubkey(self) -> str:
        return self.signer.pubkey


def _user_secret(seed: int, idx: int) -> bytes:
    return privkey_from_seed(f"canal-demo:{seed}:user:{idx}")


def _name(i: int) -> str:
    """A readable, unique handle: 26 x 12 combinations, then numbered."""
    base = f"{FIRST[i % len(FIRST)]}{LAST[(i // len(FIRST)) % len(LAST)]}"
    rounds = i // (len(FIRST) * len(LAST))
    return f"{base}{rounds}" if rounds else base


def demo_pubkey(seed: int) -> str:
    """The most popular creator of `generate(seed, ...)`: the dashboard's default pubkey."""
    return Signer(_user_secret(seed, 0)).pubkey


class _Network:
    """Builds the events; every random choice comes from one seeded `random.Random`."""

    def __init__(self, seed: int, now: int, users: int, scale: float) -> None:
        self.rng = random.Random(seed)
        self.seed, self.now, self.scale = seed, now, scale
        self.users = [_User(i, Signer(_user_secret(seed, i)), _name(i), 1.0 / (i + 1) ** 1.1) for i in range(users)]
        self.cum_weights = list(accumulate(u.weight for u in self.users))
        self.npubs = [npub_encode(u.pubkey) for u in self.users]
        self.providers = [
            (Signer(privkey_from_seed(f"canal-demo:{seed}:provider:{i}")),
             InvoiceSigner(privkey_from_seed(f"canal-demo:{seed}:node:{i}")))
            for i in range(3)
        ]
        self.events: list[Event] = []
        self.ids: set[str] = set()
        self.reactions: list[tuple[_User, Event]] = []
        self.lists: list[tuple[_User, Event]] = []
        self.deleted_pairs: list[tuple[Event, str]] = []  # (deletion, target id) for ordering
        self.zap_receipts: list[Event] = []

    # -- helpers ---------------------------------------------------------------------------
    def n(self, base: float) -> int:
        """A count scaled by `scale` (at least 1)."""
        return max(1, round(base * self.scale))

    def when(self) -> int:
        """A time in the span, denser towards `now` (age = span * u^2)."""
        return self.now - int(SPAN * self.rng.random() ** 2) - 1

    def after(self, t: int, mean: float = 6 * 3600) -> int:
        """A time after `t` (exponential delay), never after `now`."""
        return min(self.now - 1, t + 1 + int(self.rng.expovariate(1 / mean)))

    def popular(self) -> _User:
        return self.rng.choices(self.users, cum_weights=self.cum_weights)[0]

    def anyone(self) -> _User:
        return self.rng.choice(self.users)

    def sentence(self, words: int = 12) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(3, words))).capitalize() + "."

    def add(self, user: _User | Signer, kind: int, content: str, tags: list[list[str]], t: int) -> Event:
        signer = user.signer if isinstance(user, _User) else user
        ev = signer.sign(kind, content, tags, t)
        if ev["id"] not in self.ids:  # the same action twice in the same second is one event
            self.ids.add(ev["id"])
            self.events.append(ev)
        return ev

    def some_note(self, author: _User) -> Event | None:
        return self.rng.choice(author.notes) if author.notes else None

    # -- content ---------------------------------------------------------------------------
    def profiles(self) -> None:
        for u in self.users:
            meta = {"name": u.name, "display_name": u.name.capitalize(), "about": self.sentence(8),
                    "picture": f"https://robohash.org/{u.name}.png"}
            t = self.now - SPAN - self.rng.randint(1, 30 * DAY)
            self.add(u, 0, json.dumps(meta), [], t)
            if self.rng.random() < 0.2:
                meta["about"] = self.sentence(10)
                self.add(u, 0, json.dumps(meta), [], self.when())

    def contact_lists(self) -> None:
        """Each user's follows over time: a first list, then versions adding and dropping follows."""
        for u in self.users:
            follows = self._sample_follows(u, min(len(self.users) - 1, int(self.rng.lognormvariate(2.6, 0.8)) + 1))
            t = self.now - int(SPAN * (0.4 + 0.6 * self.rng.random()))
            versions = 1 + min(6, int(self.rng.expovariate(1 / 1.6)))
            for v in range(versions):
                if v:
                    t = min(self.now - 1, t + int(self.rng.expovariate(1 / (40 * DAY))) + 60)
                    follows |= self._sample_follows(u, self.rng.randint(1, 4))
                    for drop in self.rng.sample(sorted(follows), min(len(follows), self.rng.randint(0, 2))):
                        follows.discard(drop)
                tags = [["p", pk] for pk in sorted(follows)]
                if u.idx % 41 == 5:
                    tags.append(["p", u.pubkey])  # a self-follow, which never counts
                self.lists.append((u, self.add(u, 3, "", tags, t)))
                if self.rng.random() < 0.04:  # a second list in the same second: the lowest id wins
                    extra = self._sample_follows(u, 1)
                    self.lists.append((u, self.add(u, 3, "", [["p", pk] for pk in sorted(follows | extra)], t)))

    def _sample_follows(self, u: _User, k: int) -> set[str]:
        out: set[str] = set()
        for _ in range(k * 3):
            if len(out) >= k:
                break
            other = self.popular()
            if other is not u:
                out.add(other.pubkey)
        return out

    def notes(self) -> None:
        """Root notes, then replies in time order (each reply answers an earlier note)."""
        plan: list[tuple[int, _User]] = []
        for u in self.users:
            rate = self.rng.lognormvariate(0, 0.9) * (3 if u.idx < 8 else 1)
            plan += [(self.when(), u) for _ in range(self.n(12 * rate))]
        plan.sort(key=lambda p: (p[0], p[1].idx))
        for t, u in plan:
            parent_author = self.popular()
            parent = self.some_note(parent_author)
            roll = self.rng.random()
            if parent is not None and parent["created_at"] < t and roll < 0.38:
                ev = self._reply(u, parent, t)
            elif parent is not None and parent["created_at"] < t and roll < 0.43:
                ev = self._quote(u, parent, parent_author, t)
            else:
                ev = self._root_note(u, t)
            u.notes.append(ev)

    def _root_note(self, u: _User, t: int) -> Event:
        content, tags = self.sentence(), []
        if self.rng.random() < 0.1:
            other = self.popular()
            if self.rng.random() < 0.5:
                ref = self.npubs[other.idx]
            else:
                ref = nprofile_encode(other.pubkey, [RELAY_HINT, "wss://nos.lol", "wss://relay.damus.io"])
            content = f"{content} h/t nostr:{ref}"
            tags.append(["p", other.pubkey])
        if self.rng.random() < 0.3:
            tags.append(["t", self.rng.choice(WORDS)])
        return self.add(u, 1, content, tags, t)

    def _thread_root(self, parent: Event) -> Event:
        for tag in parent["tags"]:
            if tag[0] == "e" and len(tag) >= 4 and tag[3] == "root":
                return {"id": tag[1], "pubkey": tag[4] if len(tag) > 4 else parent["pubkey"]}
        return parent

    def _reply(self, u: _User, parent: Event, t: int) -> Event:
        root = self._thread_root(parent)
        ps = sorted({parent["pubkey"], root["pubkey"]} | {x[1] for x in parent["tags"] if x[0] == "p"})
        scheme = self.rng.random()
        if scheme < 0.65:  # NIP-10 marked
            tags = [["e", root["id"], RELAY_HINT, "root", root["pubkey"]]]
            if root["id"] != parent["id"]:
                tags.append(["e", parent["id"], RELAY_HINT, "reply", parent["pubkey"]])
        elif scheme < 0.85:  # deprecated positional: the last e is the parent
            tags = [["e", root["id"]]] if root["id"] != parent["id"] else []
            tags.append(["e", parent["id"], "", parent["pubkey"]] if self.rng.random() < 0.3 else ["e", parent["id"]])
        elif scheme < 0.93:  # NIP-22 comment on a note
            return self.add(u, 1111, self.sentence(), [
                ["E", root["id"], RELAY_HINT, root["pubkey"]], ["K", "1"], ["P", root["pubkey"]],
                ["e", parent["id"], RELAY_HINT, parent["pubkey"]], ["k", "1"], ["p", parent["pubkey"]]], t)
        else:  # marked reply that also cites another note as a mention
            tags = [["e", parent["id"], "", "root", parent["pubkey"]]]
            other = self.some_note(self.popular())
            if other is not None and other["id"] != parent["id"]:
                tags.append(["e", other["id"], "", "mention"])
        tags += [["p", pk] for pk in ps]
        content = self.sentence()
        if self.rng.random() < 0.08:
            content += f" cc nostr:{self.npubs[self.popular().idx]}"
        return self.add(u, 1, content, tags, t)

    def _quote(self, u: _User, quoted: Event, author: _User, t: int) -> Event:
        ref = nevent_encode(quoted["id"], [RELAY_HINT], quoted["pubkey"], quoted["kind"])
        tags = [["q", quoted["id"], RELAY_HINT, quoted["pubkey"]], ["p", author.pubkey]]
        return self.add(u, 1, f"{self.sentence()} nostr:{ref}", tags, t)

    def articles(self) -> None:
        for u in self.users[: max(3, len(self.users) // 12)]:
            for a in range(self.rng.randint(1, 4)):
                slug = f"{u.name}-post-{a}"
                t = self.when()
                for _ in range(1 + (self.rng.random() < 0.35) + (self.rng.random() < 0.15)):
                    tags = [["d", slug], ["title", self.sentence(6)], ["published_at", str(t)], ["t", "longform"]]
                    body = "\n\n".join(self.sentence(30) for _ in range(4))
                    u.articles.append(self.add(u, 30023, f"# {slug}\n\n{body}", tags, t))
                    t = self.after(t, 5 * DAY)
        for u in self.users:  # NIP-22 comments on the newest version of some articles
            for art in u.articles[-2:]:
                if self.rng.random() < 0.6:
                    addr = f"30023:{u.pubkey}:{art['tags'][0][1]}"
                    who = self.anyone()
                    self.add(who, 1111, self.sentence(), [
                        ["A", addr, RELAY_HINT], ["K", "30023"], ["P", u.pubkey],
                        ["a", addr, RELAY_HINT], ["e", art["id"], RELAY_HINT, u.pubkey], ["k", "30023"],
                        ["p", u.pubkey]], self.after(art["created_at"], 2 * DAY))
                    if self.rng.random() < 0.5:  # a quote of the article by address
                        self.add(self.anyone(), 1, f"Must read: nostr:{self.npubs[u.idx]}",
                                 [["q", addr, RELAY_HINT]], self.after(art["created_at"], 3 * DAY))

    def reactions_and_reposts(self) -> None:
        for _ in range(self.n(33 * len(self.users))):
            author = self.popular()
            note = self.some_note(author)
            if note is None:
                continue
            actor = self.anyone()
            roll = self.rng.random()
            content = "+" if roll < 0.65 else "" if roll < 0.68 else "-" if roll < 0.73 else self.rng.choice(EMOJI)
            tags = [["e", note["id"], RELAY_HINT], ["p", note["pubkey"]], ["k", str(note["kind"])]]
            if content == ":soapbox:":
                tags.append(["emoji", "soapbox", "https://example.com/soapbox.png"])
            extra = self.rng.random()
            if extra < 0.01:
                tags = [t for t in tags if t[0] != "p"]  # no p: counts for nobody
            elif extra < 0.02:
                tags = [["p", note["pubkey"]]]  # no e: profile level only
            ev = self.add(actor, 7, content, tags, self.after(note["created_at"]))
            self.reactions.append((actor, ev))
        for _ in range(self.n(2.8 * len(self.users))):
            author = self.popular()
            note = self.some_note(author)
            if note is None or note["kind"] != 1:
                continue
            tags = [["e", note["id"], RELAY_HINT], ["p", note["pubkey"]]]
            if self.rng.random() < 0.01:
                tags = tags[:1]  # a repost without p is not counted
            self.add(self.anyone(), 6, json.dumps(note), tags, self.after(note["created_at"]))
        for u in self.users:
            for art in u.articles:
                if self.rng.random() < 0.4:
                    addr = f"30023:{u.pubkey}:{art['tags'][0][1]}"
                    self.add(self.anyone(), 16, "", [["e", art["id"], RELAY_HINT], ["p", u.pubkey],
                                                    ["a", addr], ["k", "30023"]], self.after(art["created_at"]))

    def zaps(self) -> None:
        for i in range(self.n(5 * len(self.users))):
            recipient = self.popular()
            sender = self.anyone()
            note = self.some_note(recipient) if self.rng.random() < 0.65 else None
            t = self.after(note["created_at"], DAY) if note else self.when()
            msats = self.rng.choices(SATS, SATS_WEIGHTS)[0] * 1000
            self.zap(i, sender, recipient, note, msats, t, anon=self.rng.random() < 0.08)
        self._duplicate_payment()

    def zap(self, i: int, sender: _User, recipient: _User, note: Event | None, msats: int, t: int,
            anon: bool = False, payment_hash: bytes | None = None) -> Event:
        tags = [["relays", RELAY_HINT, "wss://nos.lol"], ["amount", str(msats)], ["p", recipient.pubkey]]
        if note is not None:
            tags.append(["e", note["id"]])
        signer = sender.signer
        if anon:
            tags.append(["anon"])
            signer = Signer(privkey_from_seed(f"canal-demo:{self.seed}:anon:{i}"))
        request = signer.sign(9734, self.rng.choice(["", "", "Great post!", "⚡"]), tags, t)
        description = json.dumps(request, separators=(",", ":"), ensure_ascii=False)
        provider, node = self.providers[recipient.idx % len(self.providers)]
        if payment_hash is None:
            payment_hash = hashlib.sha256(f"canal-demo:{self.seed}:payment:{i}".encode()).digest()
        bolt11 = node.invoice(msats, payment_hash, t, hashlib.sha256(description.encode("utf-8")).digest())
        rtags = [["p", recipient.pubkey]]
        if not anon and self.rng.random() < 0.8:
            rtags.append(["P", sender.pubkey])
        if note is not None:
            rtags.append(["e", note["id"]])
        rtags += [["bolt11", bolt11], ["description", description]]
        receipt = self.add(provider, 9735, "", rtags, min(self.now - 1, t + self.rng.randint(1, 5)))
        self.zap_receipts.append(receipt)
        return receipt

    def _duplicate_payment(self) -> None:
        """One payment hash reported twice (a provider retrying): only the earliest receipt counts."""
        first = self.zap(10**6, self.users[1], self.users[0], None, 21_000, self.now - 3 * DAY)
        phash = bytes.fromhex(_payment_hash_of(first))
        self.zap(10**6 + 1, self.users[1], self.users[0], None, 21_000, self.now - 3 * DAY + 30, payment_hash=phash)

    def retractions(self) -> None:
        for actor, reaction in self.rng.sample(self.reactions, min(len(self.reactions), self.n(0.15 * len(self.users)))):
            d = self.add(actor, 5, "oops", [["e", reaction["id"]], ["k", "7"]], self.after(reaction["created_at"], 3600))
            self.deleted_pairs.append((d, reaction["id"]))
        authors = [u for u in self.users if u.notes]
        for _ in range(self.n(0.1 * len(self.users))):
            u = self.rng.choice(authors)
            note = self.rng.choice(u.notes)
            d = self.add(u, 5, "", [["e", note["id"]], ["k", str(note["kind"])]], self.after(note["created_at"], DAY))
            self.deleted_pairs.append((d, note["id"]))
        for _ in range(3):  # foreign deletions: a user "deleting" someone else's note has no effect
            victim = self.popular()
            victim_note = self.some_note(victim)
            vandal = self.anyone()
            if victim_note is not None and vandal is not victim:
                self.add(vandal, 5, "spam", [["e", victim_note["id"]]], self.after(victim_note["created_at"], DAY))
        writers = [u for u in self.users if u.articles]
        if writers:  # an address deletion retracts the versions up to its created_at
            u = writers[-1]
            art = u.articles[0]
            self.add(u, 5, "", [["a", f"30023:{u.pubkey}:{art['tags'][0][1]}"], ["k", "30023"]],
                     self.after(art["created_at"], DAY))
        if self.lists:  # deleting a contact list removes it from the follower history
            u, lst = self.lists[len(self.lists) // 2]
            self.add(u, 5, "", [["e", lst["id"]], ["k", "3"]], self.after(lst["created_at"], DAY))
        if self.deleted_pairs:  # deleting a deletion has no effect
            d, _ = self.deleted_pairs[0]
            author = next(u for u in self.users if u.pubkey == d["pubkey"])
            self.add(author, 5, "", [["e", d["id"]], ["k", "5"]], self.after(d["created_at"], 600))

    def invalid(self) -> None:
        """A few events that must be rejected: bad signature, bad id, invalid zaps."""
        for i in range(3):
            ev = dict(self.users[i + 2].signer.sign(1, f"tampered {i}", [], self.when()))
            ev["sig"] = ("0" if ev["sig"][0] != "0" else "1") + ev["sig"][1:]
            self.events.append(ev)
            ev2 = dict(self.users[i + 3].signer.sign(1, f"edited {i}", [], self.when()))
            ev2["content"] += " (edited after signing)"
            self.events.append(ev2)
        target = self.users[0]
        for i, how in enumerate(("amount", "recipient", "bolt11")):
            receipt = self.zap(2 * 10**6 + i, self.users[5], target, None, 10_000, self.when())
            self.events.remove(receipt)
            self.zap_receipts.remove(receipt)
            provider = self.providers[target.idx % len(self.providers)][0]
            tags = [list(t) for t in receipt["tags"]]
            if how == "amount":
                req = json.loads(_tag(receipt, "description"))
                req_tags = [["amount", "99000"] if t[0] == "amount" else t for t in req["tags"]]
                request = self.users[5].signer.sign(9734, req["content"], req_tags, req["created_at"])
                tags = [["description", json.dumps(request)] if t[0] == "description" else t for t in tags]
            elif how == "recipient":
                tags = [["p", self.users[7].pubkey] if t[0] == "p" else t for t in tags]
            else:
                tags = [t for t in tags if t[0] != "bolt11"]
            self.add(provider, 9735, "", tags, receipt["created_at"])

    def arrival_order(self) -> list[Event]:
        """A shuffled arrival order in which one deletion arrives before its target."""
        events = list(self.events)
        self.rng.shuffle(events)
        if self.deleted_pairs:
            deletion, target_id = self.deleted_pairs[-1]
            events.remove(deletion)
            pos = next(i for i, e in enumerate(events) if e["id"] == target_id)
            events.insert(pos, deletion)
        return events


def _tag(ev: Event, name: str) -> str:
    return next(t[1] for t in ev["tags"] if t[0] == name)


def _payment_hash_of(receipt: Event) -> str:
    ph = decode_invoice(_tag(receipt, "bolt11")).payment_hash
    assert ph is not None
    return ph


def generate(seed: int, now: int, users: int = 300, scale: float = 1.0) -> list[Event]:
    """The demo network as signed event dicts, in a shuffled arrival order (deterministic in all arguments).

    `users` sets the network size and `scale` the activity per user; the defaults give about 20,000 events.
    """
    if users < 12:
        raise ValueError("the demo network needs at least 12 users")
    net = _Network(seed, now, users, scale)
    net.profiles()
    net.contact_lists()
    net.notes()
    net.articles()
    net.reactions_and_reposts()
    net.zaps()
    net.retractions()
    net.invalid()
    return net.arrival_order()
