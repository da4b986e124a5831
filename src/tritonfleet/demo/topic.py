"""The topic demo task: a 4-class set (sports, technology, food, travel) the project generates itself.

It is the second demo model, so that a release can serve two classifiers with different labels. Like
the sentiment set, the training texts come from templates filled with a seeded random generator (the
same on every machine); the held-out texts are hand-written in another style (longer, news- and
chat-like) and never overlap the training set, and the check sentences are kept out of it too.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from tritonfleet.demo.build import DEFAULT_HYPERPARAMETERS, DemoTask, normalise

__all__ = ["CHECK_SENTENCES", "HELD_OUT", "HYPERPARAMETERS", "LABELS", "TASK", "normalise", "training_set"]

#: Label names by class id.
LABELS: tuple[str, ...] = ("sports", "technology", "food", "travel")
SPORTS, TECHNOLOGY, FOOD, TRAVEL = 0, 1, 2, 3

#: Short sentences the model must classify right; they join the golden file of a release.
CHECK_SENTENCES: dict[str, str] = {
    "The team won the match in the last minute!": "sports",
    "My laptop keeps crashing after the update.": "technology",
    "This soup needs more salt and pepper.": "food",
    "We're flying to Tokyo next week.": "travel",
}

#: Generated training texts per class (fewer than sentiment: topics are easier to tell apart).
TEXTS_PER_CLASS = 200

# --------------------------------------------------------------------------------------------------
# Vocabulary of the templates (several words a line).
# --------------------------------------------------------------------------------------------------
# fmt: off
_TIMES = [
    "tomorrow", "today", "tonight", "next week", "on Monday", "on Friday", "this afternoon", "later",
    "this weekend", "next month", "on Saturday", "in the morning", "after work", "on Sunday",
]
_HOURS = ["7 am", "8:30", "noon", "2 pm", "half past six", "9 o'clock", "6 pm", "10:15"]
_NUMBERS = ["two", "three", "four", "five", "six", "ten", "twelve", "fifteen", "20", "30"]

_SPORTS = [
    "football", "basketball", "tennis", "cricket", "rugby", "baseball", "hockey", "golf", "volleyball",
    "badminton", "table tennis", "handball", "water polo", "squash",
]
_TEAMS = [
    "our team", "the home side", "the visitors", "the national team", "the champions", "my club",
    "the local club", "the underdogs", "the league leaders", "the youth team",
]
_ATHLETES = [
    "striker", "goalkeeper", "coach", "captain", "referee", "pitcher", "defender", "midfielder",
    "quarterback", "point guard", "winger", "bowler",
]
_GAMES = [
    "the match", "the final", "the game", "the tournament", "the semi-final", "the derby",
    "the championship", "the cup final", "the play-off", "the friendly", "the away game", "the league game",
]
_RACES = ["100 metres", "marathon", "relay", "200 metres", "half marathon", "sprint", "hurdles", "10k"]
_SCORES = ["two to one", "three to nil", "four to two", "one to nil", "by ten points", "on penalties", "in extra time"]

_DEVICES = [
    "laptop", "phone", "tablet", "router", "smartwatch", "printer", "graphics card", "hard drive",
    "monitor", "server", "smart speaker", "webcam", "SSD", "motherboard", "smartphone", "desktop PC",
]
_SOFTWARE = [
    "app", "browser", "operating system", "database", "website", "password manager", "compiler",
    "cloud service", "antivirus", "email client", "spreadsheet software", "video editor", "firmware",
    "chatbot", "search engine", "code editor",
]
_LANGS = ["Python", "JavaScript", "Rust", "Java", "Go", "C++", "TypeScript", "Kotlin", "Swift", "SQL"]
_SPECS = [
    "16 GB of RAM", "a faster processor", "a 4K screen", "two USB-C ports", "a bigger battery",
    "wifi 6", "a new chip", "more storage", "a fingerprint sensor", "bluetooth 5",
]
_COMPANIES = ["the company", "the startup", "Apple", "Google", "Samsung", "Microsoft", "the manufacturer"]

_DISHES = [
    "pasta", "soup", "curry", "pizza", "salad", "risotto", "tacos", "stew", "pancakes", "sushi",
    "lasagne", "omelette", "ramen", "bread", "chocolate cake", "cookies", "apple pie", "dumplings",
    "paella", "noodles", "chili", "roast chicken", "burrito", "pie",
]
_INGREDIENTS = [
    "garlic", "basil", "onions", "tomatoes", "butter", "flour", "eggs", "cheese", "ginger", "chili",
    "lemon", "rice", "mushrooms", "spinach", "cream", "cinnamon", "honey", "olive oil", "salt",
    "black pepper", "parsley", "sugar", "coriander", "yoghurt",
]
_COOK = ["Bake", "Roast", "Fry", "Grill", "Simmer", "Stir", "Boil", "Steam", "Saute", "Toast"]
_AMOUNTS = ["a cup", "two spoons", "a pinch", "200 grams", "half a cup", "a handful", "a teaspoon", "three cloves"]
_MEALS = ["breakfast", "lunch", "dinner", "brunch", "dessert", "a snack"]

_DESTINATIONS = [
    "Lisbon", "Tokyo", "Rome", "Iceland", "Peru", "Bali", "Paris", "Kyoto", "Morocco", "Norway",
    "Mexico City", "the Alps", "Barcelona", "Vietnam", "New Zealand", "Istanbul", "Cape Town",
    "Prague", "Thailand", "Scotland", "Croatia", "Chile", "Vienna", "Sicily",
]
_TRANSPORT = ["flight", "train", "ferry", "bus", "night train", "cruise", "coach", "plane"]
_LODGING = ["hotel", "hostel", "guesthouse", "campsite", "apartment", "resort", "B&B", "beach hut", "cabin"]
_TRAVEL_ITEMS = [
    "passport", "visa", "boarding pass", "suitcase", "backpack", "itinerary", "travel insurance",
    "luggage", "travel adapter", "train ticket",
]
_SIGHTS = ["old town", "cathedral", "harbour", "castle", "national park", "museum quarter", "beach", "market square"]
# fmt: on

_SLOTS: dict[str, list[str]] = {
    "time": _TIMES,
    "hour": _HOURS,
    "number": _NUMBERS,
    "sport": _SPORTS,
    "team": _TEAMS,
    "athlete": _ATHLETES,
    "game": _GAMES,
    "race": _RACES,
    "score": _SCORES,
    "device": _DEVICES,
    "software": _SOFTWARE,
    "lang": _LANGS,
    "spec": _SPECS,
    "company": _COMPANIES,
    "dish": _DISHES,
    "ingredient": _INGREDIENTS,
    "cook": _COOK,
    "amount": _AMOUNTS,
    "meal": _MEALS,
    "dest": _DESTINATIONS,
    "transport": _TRANSPORT,
    "lodging": _LODGING,
    "item": _TRAVEL_ITEMS,
    "sight": _SIGHTS,
}

# Templates end without punctuation unless they need a specific one; the generator adds "." or "!" or nothing.
_TEMPLATES: dict[int, list[str]] = {
    SPORTS: [
        "{team} won {game} {score}",
        "The {athlete} scored twice in {game}",
        "I play {sport} every week",
        "Did you watch {game} {time}?",
        "{sport} practice starts at {hour}",
        "The {athlete} was injured during {game}",
        "Tickets for {game} are sold out",
        "We need a new {athlete} for the {sport} team",
        "Our {sport} coach wants us to train {time}",
        "{team} lost {game} {score}",
        "She won the {race} at the national championships",
        "The referee sent off the {athlete} in {game}",
        "I'm learning to play {sport}",
        "The {sport} season starts {time}",
        "{team} signed a new {athlete}",
        "{game} goes to extra time",
        "He ran the {race} in record time",
        "Who is playing in {game} {time}?",
    ],
    TECHNOLOGY: [
        "My {device} won't connect to the wifi",
        "I installed the latest {software} update",
        "The {software} crashed again {time}",
        "How do I reset my {device}?",
        "The new {device} has {spec}",
        "The {software} needs more memory",
        "I need to back up my {device} {time}",
        "{company} released a new {device}",
        "The {device} battery dies after {number} hours",
        "We moved the {software} to the cloud",
        "Can you fix the bug in the {software}?",
        "I'm learning to code in {lang}",
        "The developers shipped a new version of the {software}",
        "My {device} keeps overheating",
        "The {software} is written in {lang}",
        "Is the {device} compatible with the {software}?",
        "I upgraded my {device} with {spec}",
        "The {software} asks for a new password every week",
    ],
    FOOD: [
        "This {dish} needs more {ingredient}",
        "I'm making {dish} for {meal}",
        "Add the {ingredient} and simmer for {number} minutes",
        "The recipe calls for {amount} of {ingredient}",
        "We ordered {dish} for {meal}",
        "My grandmother's {dish} recipe uses {ingredient}",
        "{cook} the {ingredient} until golden",
        "The {dish} tastes great with {ingredient}",
        "Let's have {dish} for {meal} {time}",
        "The {dish} at that restaurant is delicious",
        "Don't forget to buy {ingredient} for the {dish}",
        "I burned the {dish} again",
        "Preheat the oven before baking the {dish}",
        "Is there {ingredient} in the {dish}?",
        "I'm trying a vegetarian {dish} recipe",
        "{cook} the {dish} for {number} minutes",
        "Sprinkle {amount} of {ingredient} over the {dish}",
        "We had {dish} and salad for {meal}",
    ],
    TRAVEL: [
        "We're flying to {dest} {time}",
        "I booked a {lodging} in {dest}",
        "Our {transport} to {dest} leaves at {hour}",
        "Don't forget your {item}",
        "I'm planning a trip to {dest}",
        "The {lodging} is close to the {sight}",
        "We spent {number} days backpacking through {dest}",
        "How do I get from the airport to the {lodging}?",
        "Do I need a visa for {dest}?",
        "We took the {transport} from {dest} to {dest}",
        "My {item} is in the hotel safe",
        "The guided tour of the {sight} starts at {hour}",
        "I'd love to visit {dest} one day",
        "Check-in at the {lodging} is at {hour}",
        "We rented a car to explore {dest}",
        "The {transport} to {dest} takes {number} hours",
        "We're going on holiday to {dest} {time}",
        "Pack your {item}, we leave for {dest} {time}",
    ],
}

_FIELD = re.compile(r"\{(\w+)\}")


def _fill(template: str, rng: random.Random) -> str:
    """Fill every ``{slot}`` of ``template`` with a random word of its list."""
    return _FIELD.sub(lambda m: rng.choice(_SLOTS[m.group(1)]), template)


def _finish(text: str, rng: random.Random) -> str:
    """Capitalise and punctuate a filled template, with a little random variation."""
    text = text[0].upper() + text[1:]
    if text[-1] in ".?!":
        return text
    text += rng.choice([".", ".", "!", ""])
    if rng.random() < 0.1:
        text = text.lower()
    return text


def training_set(seed: int = 0) -> list[tuple[str, int]]:
    """Generate the labelled training set: ``TEXTS_PER_CLASS`` unique ``(text, class id)`` per class.

    Deterministic for a given ``seed``; excludes the check sentences and every held-out text
    (compared after :func:`normalise`). The result is shuffled.
    """
    rng = random.Random(seed)
    excluded = {normalise(t) for t in CHECK_SENTENCES} | {normalise(t) for t, _ in HELD_OUT}
    seen: set[str] = set()
    data: list[tuple[str, int]] = []
    for label in range(len(LABELS)):
        templates = _TEMPLATES[label]
        count, attempts = 0, 0
        while count < TEXTS_PER_CLASS:
            attempts += 1
            if attempts > 200 * TEXTS_PER_CLASS:
                raise RuntimeError(f"templates for {LABELS[label]} cannot give {TEXTS_PER_CLASS} unique texts")
            text = _finish(_fill(templates[attempts % len(templates)], rng), rng)
            key = normalise(text)
            if key in seen or key in excluded:
                continue
            seen.add(key)
            data.append((text, label))
            count += 1
    rng.shuffle(data)
    return data


#: Hand-written held-out texts (22 per class), longer and more varied than the templates.
HELD_OUT: list[tuple[str, int]] = [
    # sports
    ("After a nervy first half, the visitors came back to win three to two in stoppage time.", SPORTS),
    ("Her serve has improved so much since she started working with the new coach.", SPORTS),
    ("The marathon route passes right by our house, so we'll cheer from the balcony.", SPORTS),
    ("Fans ran onto the pitch when the final whistle blew.", SPORTS),
    ("He has been the league's top scorer for three seasons in a row.", SPORTS),
    ("The Olympic swimming trials are being held in the city this summer.", SPORTS),
    ("Our under-twelves finally won a game and the kids were overjoyed.", SPORTS),
    ("The umpire's call at third base decided the whole game.", SPORTS),
    ("She climbed the mountain stage without losing the yellow jersey.", SPORTS),
    ("Training was cancelled because the pitch was waterlogged.", SPORTS),
    ("The boxer retired after twenty years in the ring.", SPORTS),
    ("Nobody expected the underdogs to reach the cup final.", SPORTS),
    ("I've been going to the gym to get fit for the ski season.", SPORTS),
    ("The quarterback threw four touchdown passes on Sunday night.", SPORTS),
    ("Our goalkeeper saved two penalties in the shootout.", SPORTS),
    ("The transfer fee for the young midfielder broke the club record.", SPORTS),
    ("They beat the defending champions in straight sets.", SPORTS),
    ("The relay team set a new national record at the athletics meeting.", SPORTS),
    ("The derby is always the loudest match of the season.", SPORTS),
    ("She dribbled past three defenders before shooting into the top corner.", SPORTS),
    ("Thunderstorms delayed the final round of the golf tournament.", SPORTS),
    ("Half the squad is injured ahead of the play-offs.", SPORTS),
    # technology
    ("After the firmware upgrade the router drops the connection every few minutes.", TECHNOLOGY),
    ("The startup is building a chip that runs language models on a phone.", TECHNOLOGY),
    ("I swapped my old spinning hard disk for an SSD and now it boots in seconds.", TECHNOLOGY),
    ("Our website went down because the database ran out of disk space.", TECHNOLOGY),
    ("Two-factor authentication would have stopped that phishing attack.", TECHNOLOGY),
    ("The new operating system release drops support for older processors.", TECHNOLOGY),
    ("Can somebody explain why my Python script runs out of memory?", TECHNOLOGY),
    ("The smartwatch tracks my heart rate and syncs with the app overnight.", TECHNOLOGY),
    ("They open-sourced the compiler and published the code on GitHub.", TECHNOLOGY),
    ("My monitor flickers whenever I plug in the second display.", TECHNOLOGY),
    ("The company is moving all its servers into a cloud data centre.", TECHNOLOGY),
    ("This keyboard has mechanical switches and a detachable USB-C cable.", TECHNOLOGY),
    ("A software bug in the payment system charged some customers twice.", TECHNOLOGY),
    ("The robot vacuum maps every room before it starts cleaning.", TECHNOLOGY),
    ("Engineers patched the security vulnerability within a day.", TECHNOLOGY),
    ("I spent the weekend building a gaming PC from spare parts.", TECHNOLOGY),
    ("The latest smartphone has three cameras and a folding screen.", TECHNOLOGY),
    ("Our team uses containers and Kubernetes to deploy the web service.", TECHNOLOGY),
    ("The printer driver still isn't compatible with my laptop.", TECHNOLOGY),
    ("Artificial intelligence is changing how search engines rank pages.", TECHNOLOGY),
    ("The browser extension blocks trackers and makes pages load faster.", TECHNOLOGY),
    ("Quantum computers are still far from breaking modern encryption.", TECHNOLOGY),
    # food
    ("Slow-cook the lamb shoulder overnight with rosemary and plenty of garlic.", FOOD),
    ("The new ramen shop downtown makes its noodles fresh every morning.", FOOD),
    ("My sourdough starter finally bubbled after a week of feeding it flour and water.", FOOD),
    ("For dessert we had a warm chocolate tart with vanilla ice cream.", FOOD),
    ("Could you grab some eggs, butter and a bag of sugar on your way home?", FOOD),
    ("The chef recommended the grilled sea bass with a lemon butter sauce.", FOOD),
    ("I always add a pinch of salt to the caramel.", FOOD),
    ("Their breakfast menu has fluffy pancakes with maple syrup and berries.", FOOD),
    ("We made dumplings from scratch with pork, cabbage and ginger.", FOOD),
    ("This curry is far too spicy for the kids.", FOOD),
    ("Marinate the chicken in yoghurt and spices for at least two hours.", FOOD),
    ("The farmers' market sells the sweetest strawberries in June.", FOOD),
    ("A good risotto needs constant stirring and warm stock.", FOOD),
    ("I'm cutting back on sugar, so no more cake after dinner.", FOOD),
    ("The bakery's cinnamon rolls are still warm at seven in the morning.", FOOD),
    ("Let the dough rest in the fridge before rolling it out.", FOOD),
    ("We tried a tasting menu with seven courses and matching wines.", FOOD),
    ("Toss the salad with olive oil, vinegar and a little mustard.", FOOD),
    ("My dad grills the best barbecue ribs every summer.", FOOD),
    ("The soup was thick with lentils, carrots and smoked paprika.", FOOD),
    ("She brought homemade lemonade and cucumber sandwiches to the picnic.", FOOD),
    ("Whisk the egg whites until they form stiff peaks.", FOOD),
    # travel
    ("We caught the overnight ferry to the islands and woke up in the harbour.", TRAVEL),
    ("The airline lost our bags somewhere between Madrid and Lima.", TRAVEL),
    ("Remember to exchange some money before we land in Hanoi.", TRAVEL),
    ("Our hostel in the old quarter had a rooftop terrace facing the cathedral.", TRAVEL),
    ("The visa application asks for proof of a return ticket.", TRAVEL),
    ("We hiked the coastal path from village to village for a week.", TRAVEL),
    ("Is it cheaper to take the high-speed train or fly to Milan?", TRAVEL),
    ("The tour guide took us to the temples at sunrise.", TRAVEL),
    ("My passport got stamped four times on this trip.", TRAVEL),
    ("We rented a campervan and drove along the fjords.", TRAVEL),
    ("The boarding gate changed twice before our flight to Athens.", TRAVEL),
    ("Backpacking across South America took us almost six months.", TRAVEL),
    ("The travel agent found us a beach bungalow for our honeymoon.", TRAVEL),
    ("Jet lag kept me awake for the first three nights in Sydney.", TRAVEL),
    ("Which neighbourhood should we stay in when we visit Buenos Aires?", TRAVEL),
    ("The cable car takes tourists up to the top of the mountain.", TRAVEL),
    ("We missed our connecting flight and spent the night at the airport.", TRAVEL),
    ("Bring comfortable shoes, the walking tour of the city takes all day.", TRAVEL),
    ("The cruise stops at five ports along the Mediterranean coast.", TRAVEL),
    ("I'm saving up for a summer of island hopping in Greece.", TRAVEL),
    ("Our hotel upgraded us to a room with an ocean view.", TRAVEL),
    ("The border crossing took two hours because of the queues.", TRAVEL),
]

#: Training hyperparameters: the builder's defaults (2 epochs of 800 texts, well under 30 s on 2 cores).
HYPERPARAMETERS: dict[str, Any] = dict(DEFAULT_HYPERPARAMETERS)

TASK = DemoTask(
    name="topic",
    labels=LABELS,
    training_set=training_set,
    held_out=HELD_OUT,
    checks=CHECK_SENTENCES,
    sources=(Path(__file__).with_name("build.py"), Path(__file__)),
    hyperparameters=HYPERPARAMETERS,
    min_accuracy=0.85,
)
