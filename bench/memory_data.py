"""A generated personal-memory set for ``bench/memory_recall.py``.

Facts come from templates filled with names, places and project vocabulary; each
fact gets two questions written with synonyms, so a question shares little more
than a name with its fact ("My sister Ada lives in Porto" / "Which city is Ada
based in these days?"). Distractors are near misses about the same people ("Ada
once visited Lyon on holiday") and everyday exchanges. Everything is derived from
a seed; nothing here knows how any retrieval method scores.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _rows(text: str) -> tuple[tuple[str, ...], ...]:
    """Lines of ``a | b | c`` -> tuples (blank lines ignored)."""
    return tuple(
        tuple(cell.strip() for cell in line.split("|"))
        for line in text.splitlines()
        if line.strip()
    )


NAMES = _words(
    "Ada Alba Amir Anika Arlo Asha Basil Beatrix Bram Calla Cyrus Dalia Dario Delphine Emeric "
    "Enzo Esme Farid Fenna Florin Gaia Gideon Greta Hana Hugo Idris Ilse Imogen Ines Ivo Jasper "
    "Joaquin Juno Kaito Kalinda Keziah Lars Leona Linus Lorcan Mabel Malik Marisol Matteo Mira "
    "Nadia Nico Noor Oona Orson Otto Paloma Pilar Quentin Rafferty Rhea Rosalind Rufus Saoirse "
    "Selma Soren Tamsin Tariq Thea Ulla Valentin Wren Xavi Yara Zeno Zofia Anselm Brielle "
    "Caspian Dorit Elio Fleur Gunnar Halcyon Ignatius Jolene Kasimir Liesel Magnus Nerys Odile"
)
SURNAMES = _words(
    "Abernathy Bianchi Castellano Dufresne Eriksen Fairweather Galloway Hakimi Iwasaki "
    "Jablonski Kowalczyk Lindqvist Montague Nakamura Okonkwo Pemberton Quintero Rasmussen "
    "Szabo Thibodeaux Umberto Vasquez Whitlock Yilmaz Zimmermann Achterberg Brannigan Cardenas"
)
RELATIONS = (
    "sister", "brother", "mother", "father", "aunt", "uncle", "cousin", "best friend",
    "neighbour", "colleague", "boss", "grandmother", "grandfather", "niece", "nephew",
    "flatmate", "godmother", "stepbrother", "sister-in-law", "old classmate",
)  # fmt: skip
CITIES = (
    "Porto", "Lyon", "Krakow", "Nairobi", "Osaka", "Valparaiso", "Tbilisi", "Ghent", "Bergen",
    "Hobart", "Marrakesh", "Halifax", "Ljubljana", "Cusco", "Tallinn", "Adelaide", "Bologna",
    "Gdansk", "Kyoto", "Seville", "Reykjavik", "Montevideo", "Dublin", "Tromso", "Zanzibar",
)  # fmt: skip
JOBS = (
    "veterinary surgeon", "air traffic controller", "pastry chef", "structural engineer",
    "court interpreter", "midwife", "locksmith", "marine biologist", "tax auditor",
    "piano tuner", "firefighter", "pharmacist", "radio producer", "glassblower",
    "orthodontist", "park ranger", "data journalist", "stonemason", "sommelier", "actuary",
)  # fmt: skip
MONTHS = _words(
    "January February March April May June July August September October November December"
)
ALLERGENS = (
    "peanuts", "shellfish", "penicillin", "bee stings", "sesame", "kiwi fruit", "latex",
    "cat dander", "strawberries", "gluten", "walnuts", "mustard",
)  # fmt: skip
PETS = ("tortoise", "greyhound", "parrot", "ferret", "corn snake", "rabbit", "siamese cat",
        "border collie", "goldfish", "hedgehog", "chinchilla", "dachshund")  # fmt: skip
PET_NAMES = ("Biscuit", "Mango", "Pickles", "Socrates", "Noodle", "Waffles", "Ziggy",
             "Pepper", "Turnip", "Clementine", "Bramble", "Gizmo")  # fmt: skip
DISHES = (
    "mushroom risotto", "lamb tagine", "pad thai", "beef bourguignon", "paella", "ramen",
    "moussaka", "pierogi", "shakshuka", "pho", "lasagne", "chicken biryani",
)  # fmt: skip
CARS = ("Volvo estate", "Fiat 500", "Land Rover Defender", "Tesla Model 3", "Mini Cooper",
        "Subaru Outback", "VW camper van", "Toyota Prius", "Vespa scooter", "Saab 900")  # fmt: skip
COLOURS = ("red", "dark green", "silver", "white", "navy blue", "yellow", "black", "orange")
HOBBIES = (
    "bouldering at the climbing gym", "restoring antique clocks", "sea kayaking",
    "birdwatching in the marshes", "brewing cider", "playing chess online",
    "knitting jumpers", "running trail ultramarathons", "painting watercolours",
    "building model railways", "foraging for mushrooms", "salsa dancing",
)  # fmt: skip
SUBJECTS = ("astrophysics", "medieval history", "civil engineering", "linguistics",
            "marine ecology", "economics", "architecture", "philosophy", "nursing",
            "computer science", "graphic design", "law")  # fmt: skip
UNIS = ("Edinburgh", "Leiden", "Uppsala", "Bologna", "McGill", "Otago", "Heidelberg",
        "Trinity College", "Salamanca", "Coimbra")  # fmt: skip

# attribute -> (fact templates, question templates with synonyms, slot makers)
PERSON_FACTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "home": (
        ("My {rel} {name} lives in {city}.", "{name}, my {rel}, moved to {city} for good."),
        (
            "Which city is {name} based in these days?",
            "Where does {name} reside now?",
            "In what town has {name} settled?",
        ),
    ),
    "job": (
        ("{name} works as a {job}.", "My {rel} {name} earns a living as a {job}."),
        (
            "What does {name} do for a living?",
            "What is {name}'s profession?",
            "Which career did {name} go into?",
        ),
    ),
    "birthday": (
        ("{name}'s birthday is on {month} {day}.", "My {rel} {name} was born on {month} {day}."),
        (
            "When should I send {name} a card to celebrate turning a year older?",
            "On what date does {name} have another trip around the sun?",
            "Remind me the day {name} came into the world?",
        ),
    ),
    "allergy": (
        ("{name} is allergic to {allergen}.", "My {rel} {name} reacts badly to {allergen}."),
        (
            "Is there something {name} must avoid for health reasons?",
            "What gives {name} an allergic reaction?",
            "Which substance makes {name} unwell?",
        ),
    ),
    "pet": (
        (
            "{name} has a {pet} called {pet_name}.",
            "My {rel} {name} keeps a {pet} named {pet_name}.",
        ),
        (
            "What animal does {name} look after at home?",
            "Tell me about {name}'s companion animal?",
            "Which creature shares {name}'s house?",
        ),
    ),
    "dish": (
        ("{name}'s favourite dish is {dish}.", "My {rel} {name} loves eating {dish} most of all."),
        (
            "If I cook dinner for {name}, what meal would delight them?",
            "What food does {name} enjoy above everything else?",
            "Which recipe should I prepare when {name} visits?",
        ),
    ),
    "car": (
        ("{name} drives a {colour} {car}.", "My {rel} {name} gets around in a {colour} {car}."),
        (
            "What vehicle does {name} own?",
            "Which automobile is {name}'s?",
            "What does {name} use to travel on the roads?",
        ),
    ),
    "hobby": (
        ("{name} spends weekends {hobby}.", "In spare time my {rel} {name} enjoys {hobby}."),
        (
            "What pastime is {name} into?",
            "How does {name} like to unwind on Saturdays?",
            "Which leisure activity keeps {name} busy off work?",
        ),
    ),
    "study": (
        (
            "{name} studied {subject} at {uni}.",
            "My {rel} {name} has a degree in {subject} from {uni}.",
        ),
        (
            "What was {name}'s major in college?",
            "Which university course did {name} complete?",
            "What academic field did {name} train in?",
        ),
    ),
}  # fmt: skip
NEAR_MISSES = (
    "{name} once visited {city} on a short holiday.",
    "{name} used to work as a {job} many years ago.",
    "{name} is thinking about taking up {hobby} next year.",
    "{name} tried {dish} once and found it too salty.",
    "{name} borrowed a {colour} {car} from a friend last summer.",
    "{name} wants to adopt a {pet} one day.",
)

# Project vocabulary, one row each: project | group | word in the fact | synonym phrase
# used in the questions | (components) the option chosen.
PROJECT_ROWS = _rows("""
kitchen renovation | roles | plumber | person fixing the water pipes
kitchen renovation | roles | electrician | wiring specialist
kitchen renovation | roles | tiler | person laying the wall ceramics
kitchen renovation | roles | architect | building designer
kitchen renovation | roles | joiner | carpenter making the cupboards
kitchen renovation | items | cabinets | cupboards
kitchen renovation | items | appliances | fridge and oven
kitchen renovation | items | flooring | floor covering
kitchen renovation | items | lighting | lamps and bulbs
kitchen renovation | items | worktop | counter surface
kitchen renovation | events | demolition | tear-out of the old units
kitchen renovation | events | inspection | council check
kitchen renovation | events | cabinet delivery | drop-off of the cupboards
kitchen renovation | events | plastering | wall skim coat
kitchen renovation | events | handover | final walkthrough
kitchen renovation | components | sink | basin for washing up | a deep Belfast sink
kitchen renovation | components | hob | cooktop | an induction hob
kitchen renovation | components | splashback | wall behind the stove | green zellige tiles
kitchen renovation | components | tap | faucet | a brushed brass mixer
kitchen renovation | components | paint | wall colour | Farrow sage green
wedding planning | roles | photographer | person taking the pictures
wedding planning | roles | florist | flower arranger
wedding planning | roles | caterer | food supplier for the reception
wedding planning | roles | celebrant | officiant
wedding planning | roles | DJ | music person for the party
wedding planning | items | venue hire | renting the hall
wedding planning | items | dress | bridal gown
wedding planning | items | rings | wedding bands
wedding planning | items | flowers | bouquets and centrepieces
wedding planning | items | cake | tiered dessert
wedding planning | events | cake tasting | sampling the desserts
wedding planning | events | rehearsal | practice run
wedding planning | events | dress fitting | gown alteration appointment
wedding planning | events | venue visit | tour of the hall
wedding planning | events | menu tasting | trying the dishes
wedding planning | components | first dance song | track for our opening dance | La Vie en Rose
wedding planning | components | colour scheme | palette | dusty blue and ivory
wedding planning | components | invitations | stationery | letterpress cards
wedding planning | components | guest favours | small gifts for attendees | jars of local honey
wedding planning | components | honeymoon | trip after the ceremony | two weeks in Sicily
atlas app | roles | backend developer | server-side programmer
atlas app | roles | designer | person doing the UI mockups
atlas app | roles | product owner | person prioritising the backlog
atlas app | roles | tester | QA person
atlas app | roles | security reviewer | pentest contact
atlas app | items | cloud hosting | servers in the data centre
atlas app | items | app store fees | marketplace charges
atlas app | items | analytics licence | usage tracking subscription
atlas app | items | contractors | freelancers
atlas app | items | marketing | advertising campaign
atlas app | events | beta launch | first release to testers
atlas app | events | design review | mockup critique
atlas app | events | code freeze | stop on merging features
atlas app | events | security audit | penetration test
atlas app | events | investor demo | pitch to funders
atlas app | components | database | data store | PostgreSQL 16
atlas app | components | frontend framework | UI library | SvelteKit
atlas app | components | auth provider | login service | Keycloak
atlas app | components | map tiles | cartography source | OpenStreetMap vector tiles
atlas app | components | push notifications | phone alerts | Firebase messaging
marathon training | roles | coach | running trainer
marathon training | roles | physio | injury therapist
marathon training | roles | nutritionist | diet adviser
marathon training | roles | running buddy | training partner
marathon training | roles | podiatrist | foot doctor
marathon training | items | race entry | registration fee
marathon training | items | shoes | trainers
marathon training | items | gym membership | fitness club pass
marathon training | items | energy gels | carb sachets
marathon training | items | sports massage | muscle rub sessions
marathon training | events | long run | weekly distance session
marathon training | events | half marathon | 13-mile warm-up race
marathon training | events | taper | reduction in mileage
marathon training | events | race day | the big event
marathon training | events | gait analysis | stride assessment
marathon training | components | target pace | speed per kilometre | 5:20 per km
marathon training | components | training plan | schedule | the Hansons programme
marathon training | components | race shoe | footwear for the event | Saucony Endorphin Speed
marathon training | components | fuelling | eating during the run | a gel every 40 minutes
marathon training | components | watch | GPS device | a Garmin Forerunner
thesis | roles | supervisor | academic adviser
thesis | roles | second reader | co-examiner
thesis | roles | lab technician | person running the instruments
thesis | roles | statistician | numbers consultant
thesis | roles | proofreader | copy editor
thesis | items | conference travel | trip to present
thesis | items | printing | binding the copies
thesis | items | transcription | interview typing service
thesis | items | survey incentives | participant vouchers
thesis | items | software licences | program subscriptions
thesis | events | submission | hand-in
thesis | events | viva | oral defence
thesis | events | ethics review | approval board meeting
thesis | events | chapter draft | first version of a section
thesis | events | progress meeting | check-in with faculty
thesis | components | citation style | referencing format | APA seventh edition
thesis | components | method | research approach | mixed methods with interviews
thesis | components | typesetting tool | document software | LaTeX with the memoir class
thesis | components | dataset | data source | the 2019 household panel
thesis | components | title | name of the dissertation | Tides of Trust
garden | roles | landscaper | garden designer
garden | roles | tree surgeon | arborist
garden | roles | fencer | person putting up the boundary
garden | roles | bricklayer | wall builder
garden | roles | irrigation fitter | sprinkler installer
garden | items | plants | seedlings and shrubs
garden | items | paving | patio slabs
garden | items | shed | garden hut
garden | items | compost | soil improver
garden | items | greenhouse | glass house
garden | events | planting day | putting things in the ground
garden | events | hedge trim | cutting back the bushes
garden | events | soil test | earth analysis
garden | events | patio laying | slab installation
garden | events | pond dig | excavating the water feature
garden | components | lawn seed | grass mix | a drought-tolerant fescue blend
garden | components | hedge | boundary shrubs | copper beech
garden | components | raised beds | planters | larch sleepers
garden | components | pond liner | water feature lining | EPDM rubber
garden | components | fruit tree | orchard sapling | a Bramley apple
""")
PROJECTS: tuple[str, ...] = tuple(dict.fromkeys(row[0] for row in PROJECT_ROWS))
PROJECT_TEMPLATES = {
    "roles": (
        ("{person} is handling the {word} side of things.", "We hired {person} as our {word}."),
        ("Who is our {syn}?", "Which person did we bring on as {syn}?"),
    ),
    "items": (
        ("We capped spending on the {word} at {amount}.", "The {word} budget is {amount}."),
        ("How much money can go to {syn}?", "What's the most we will pay for {syn}?"),
    ),
    "events": (
        ("The {word} is set for {month} {day}.", "We scheduled the {word} on {month} {day}."),
        ("When does the {syn} take place?", "What day is the {syn} happening?"),
    ),
    "components": (
        ("For the {word} we chose {option}.", "We went with {option} for the {word}."),
        ("Which {syn} did we settle on?", "What did we decide about the {syn}?"),
    ),
}
PHONE_FACT = ("{person}'s phone number is {phone}.", "You can ring {person} on {phone}.")
PHONE_QUESTIONS = ("How do I call {person}?", "What digits reach {person} by telephone?")
CHATTER = (
    "User: I watched a documentary about {topic} tonight.\nTARS: Sounds interesting! What "
    "did you learn about {topic}?",
    "User: Remind me to buy {thing} tomorrow.\nTARS: I can't set reminders yet, but note it "
    "down: {thing}.",
    "User: The weather in {city} looks {weather} this week.\nTARS: Pack accordingly!",
    "User: Can you explain {topic} briefly?\nTARS: In short, {topic} is a broad subject; "
    "let's start with the basics.",
    "User: I'm tired today, the {thing} kept me up.\nTARS: Sorry to hear that. Rest well.",
)
TOPICS = (
    "octopuses", "volcanoes", "the Roman empire", "black holes", "jazz history", "bees",
    "quantum computing", "medieval castles", "deep sea vents", "tea ceremonies",
)  # fmt: skip
THINGS = ("batteries", "oat milk", "printer paper", "a birthday card", "bin bags",
          "coffee beans", "light bulbs", "stamps", "neighbour's dog", "new socks")  # fmt: skip
WEATHER = ("rainy", "sunny", "stormy", "freezing", "humid", "grey")


@dataclass(frozen=True)
class Fact:
    key: str
    text: str
    project: str | None  # None: global (about the user's people)
    kind: str = "fact"  # fact | exchange


@dataclass(frozen=True)
class Question:
    text: str
    fact_key: str
    project: str  # asked while this project is active


@dataclass(frozen=True)
class MemorySet:
    facts: tuple[Fact, ...]
    questions: tuple[Question, ...]
    distractors: tuple[Fact, ...]
    projects: tuple[str, ...]


def _person_slots(rng: random.Random, name: str, rel: str) -> dict[str, str]:
    return {
        "name": name,
        "rel": rel,
        "city": rng.choice(CITIES),
        "job": rng.choice(JOBS),
        "month": rng.choice(MONTHS),
        "day": str(rng.randint(1, 28)),
        "allergen": rng.choice(ALLERGENS),
        "pet": rng.choice(PETS),
        "pet_name": rng.choice(PET_NAMES),
        "dish": rng.choice(DISHES),
        "car": rng.choice(CARS),
        "colour": rng.choice(COLOURS),
        "hobby": rng.choice(HOBBIES),
        "subject": rng.choice(SUBJECTS),
        "uni": rng.choice(UNIS),
    }


def generate(seed: int = 7, people: int = 60, per_person: int = 6) -> MemorySet:
    rng = random.Random(seed)
    projects = PROJECTS
    facts: list[Fact] = []
    questions: list[Question] = []
    distractors: list[Fact] = []
    names = rng.sample(NAMES, people)
    for name in names:
        rel = rng.choice(RELATIONS)
        slots = _person_slots(rng, name, rel)
        for attr in rng.sample(sorted(PERSON_FACTS), per_person):
            fact_templates, question_templates = PERSON_FACTS[attr]
            key = f"{name}.{attr}"
            facts.append(Fact(key, rng.choice(fact_templates).format(**slots), None))
            for q in rng.sample(question_templates, 2):  # asked from any project
                questions.append(Question(q.format(**slots), key, rng.choice(projects)))
        for template in rng.sample(NEAR_MISSES, 3):
            other = _person_slots(rng, name, rel)  # different values, same person
            distractors.append(
                Fact(f"{name}.near.{len(distractors)}", template.format(**other), None)
            )
    for row in PROJECT_ROWS:
        project, group, word, syn = row[:4]
        fact_templates, question_templates = PROJECT_TEMPLATES[group]
        person = f"{rng.choice(NAMES)} {rng.choice(SURNAMES)}"
        slots = {
            "word": word,
            "syn": syn,
            "person": person,
            "amount": f"{rng.randint(2, 90) * 100} euros",
            "month": rng.choice(MONTHS),
            "day": str(rng.randint(1, 28)),
            "option": row[4] if len(row) > 4 else "",
        }
        key = f"{project}.{group}.{word}"
        facts.append(Fact(key, rng.choice(fact_templates).format(**slots), project))
        for q in question_templates:
            questions.append(Question(q.format(**slots), key, project))
        if group == "roles":
            phone = f"+44 7{rng.randint(100, 999)} {rng.randint(100000, 999999)}"
            pkey = f"{project}.phone.{word}"
            text = rng.choice(PHONE_FACT).format(person=person, phone=phone)
            facts.append(Fact(pkey, text, project))
            for q in PHONE_QUESTIONS:
                questions.append(Question(q.format(person=person), pkey, project))
    for i in range(len(facts) - len(distractors)):
        template = rng.choice(CHATTER)
        text = template.format(
            topic=rng.choice(TOPICS), thing=rng.choice(THINGS), city=rng.choice(CITIES),
            weather=rng.choice(WEATHER),
        )  # fmt: skip
        distractors.append(Fact(f"chatter.{i}", text, rng.choice((*projects, None)), "exchange"))
    return MemorySet(tuple(facts), tuple(questions), tuple(distractors), projects)


def word_overlap(a: str, b: str) -> float:
    """Share of a question's content words found in its fact (for the report)."""
    stop = set(
        _words("the a an of to in on is my our we what which who how does did do for at i me s")
    )

    def words(t: str) -> set[str]:
        return {w for w in "".join(c.lower() if c.isalnum() else " " for c in t).split()} - stop

    qa, fb = words(a), words(b)
    return len(qa & fb) / len(qa) if qa else 0.0


def main() -> None:
    """`make bench` runs every file here: this one describes the generated set."""
    import json
    import statistics

    data = generate()
    facts = {f.key: f for f in data.facts}
    overlap = statistics.fmean(word_overlap(q.text, facts[q.fact_key].text) for q in data.questions)
    sample = data.questions[0]
    print(
        json.dumps(
            {
                "bench": "memory_data",
                "facts": len(data.facts),
                "questions": len(data.questions),
                "distractors": len(data.distractors),
                "projects": list(data.projects),
                "mean_question_word_overlap": round(overlap, 3),
                "example": {"fact": facts[sample.fact_key].text, "question": sample.text},
            }
        )
    )


if __name__ == "__main__":
    main()
