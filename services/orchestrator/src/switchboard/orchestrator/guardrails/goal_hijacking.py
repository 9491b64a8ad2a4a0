"""Goal-hijacking rules (decision 0085): a disregard of whatever came before followed by
output to produce, a new task or job, instructions replaced, the role abandoned, a new
identity, in six or seven languages; `setup_and_output` holds the rest of 0085's rules.
`injection_rules` puts them first among its rules; `injection.py` runs the disregard itself."""

import re

from switchboard.orchestrator.guardrails._text import Rule, rx

# Goal hijacking: a verb of disregard aimed at whatever came before, not only at
# "instructions" ("forget everything", "ignore the above", "vergiss alles davor", "leave all
# the previous information behind", "die obigen Ausführungen ignorieren").
_DISREGARD_ANY = (
    r"\b(?:ignore|disregard|(?<!don't )(?<!do not )(?<!never )forget(?: about)?|abandon"
    r"|leave behind|put aside|set aside"
    r"|vergiss|vergesst|vergessen sie|ignoriere|ignoriert|ignorieren sie|missachte"
    r"|oublie[sz]?|ignore[sz]|olvida|olvide|olvidad|ignora|dimentica|dimenticate|esqueça"
    r"|esqueca|vergeet|negeer)\b"
)
# What a customer starts over on ("forget the previous order"): theirs, not the assistant's.
_CUSTOMER_THINGS = (
    r"(?:orders?|address|items?|products?|purchases?|messages?|e-?mails?|one|delivery"
    r"|parcels?|packages?|bookings?|reservations?|payments?|cards?|numbers?|requests?"
    r"|questions?|answer|chat|conversation|agent|tickets?|complaints?)\b"
)
_WHAT_CAME_BEFORE = (
    r"\b(?:everything|all)\b(?! (?:i|we|my|our)\b)(?: (?:of )?(?:this|that|the|your))?"
    r"(?: (?:previous|prior|preceding|above|earlier|former|other|old))?(?: \w+)?"
    r"|\b(?:the|what(?:'s| is| was)?) (?:above|before)\b|\babove\b"
    r"|\b(?:the|your|all|any) (?:previous|prior|preceding|earlier|former|old|initial|original)"
    rf" (?!{_CUSTOMER_THINGS})\w+|\bwhat (?:came|was said|you (?:were|have been) (?:told|given))\b"
    r"|\b(?:the|your) (?:assignments|tasks|orders|commands|articles|documents|context)\b"
    r"|\balles\b(?: (?:davor|vorher|zuvor|bisher\w*|gesagte|obige|vorige|andere))?"
    r"|\b(?:alle|die|deine|ihre) (?:vorherigen|vorangehenden|vorangegangenen|bisherigen"
    r"|vorigen|obigen|früheren|alten)? ?(?:\w+ )?(?:aufträge|aufgaben|befehle|angaben"
    r"|informationen|anweisungen|instruktionen|vorgaben|ausführungen|regeln|artikel|dokumente)\b"
    r"|\btout\b(?: ce qui (?:précède|a été dit))?|\b(?:les|vos|tes) \w+ précédentes?\b"
    r"|\btodo\b(?: lo anterior| lo que)?|\blo anterior\b|\b(?:las|los|tus|sus) \w+ anteriores\b"
    r"|\btutto\b(?: quanto)?|\bquanto (?:sopra|detto)\b|\b(?:le|tutte le|i|tutti i) \w+"
    r" precedenti\b|\btudo\b(?: o que)?|\b(?:as|os|todas as|todos os) \w+ anteriores\b"
    r"|\balles\b|\bal het voorgaande\b|\b(?:alle|de) vorige \w+\b"
)
# Every alternative of DISREGARD_WHAT_CAME_BEFORE holds one of these (lower case).
DISREGARD_TRIGGERS = (
    "ignor", "disregard", "forget", "abandon", "leave behind", "aside", "vergiss", "vergesst",
    "vergessen", "missacht", "oublie", "olvid", "dimentic", "esque", "vergeet", "negeer",
    "streichen", "hinter sich",
)  # fmt: skip
DISREGARD_WHAT_CAME_BEFORE = re.compile(
    rf"(?:{_DISREGARD_ANY})\s+(?:(?:about|all of|me|mir|moi|me)\s+)?(?:{_WHAT_CAME_BEFORE})"
    # German puts the infinitive last: "die obigen Ausführungen ignorieren", "alle
    # vorangegangenen Aufgaben aus dem Kopf zu streichen".
    r"|\b(?:die obigen|alle vorherigen|alle vorangegangenen|alle vorangehenden|alle bisherigen"
    r"|alles vorherige|das obige|alles bisherige|alles davor)\s+(?:\w+\s+){0,5}?(?:zu\s+)?"
    r"(?:ignorieren|vergessen|streichen|hinter sich (?:zu )?lassen)\b",
    re.IGNORECASE,
)
# What a hijacker asks for once the slate is wiped: output the model should produce ("say",
# "write", "print ...", "schreibe", "dis"), or a new task to focus on.
# The customer speaking of themselves between the disregard and the directive ("ignore the
# above, I wrote the wrong e-mail, write it to ..."): a correction, not a hijack.
CUSTOMER_VOICE = re.compile(
    r"\b(?:i|i'm|i've|my|we|our|ich|mein\w*|wir|unser\w*|je|j'|mon|ma|mes|yo|mis?|io|mio"
    r"|mia|eu|meu|minha|ik|mijn)\b",
    re.IGNORECASE,
)
NEW_DIRECTIVE = re.compile(
    r"\b(?:say|write|print|output|repeat|state|generate|compose|focus|concentrate|listen to"
    r"|schreib\w*|sag|sage|sagen sie|antworte nur|gib \w+ aus|konzentrier\w*|formulier\w*"
    r"|verfass\w*|écri\w*|dis|dites|concentre\w*|escrib\w*|di|decid|scrivi|scrivete|dì"
    r"|escreva|diga|schrijf|zeg)\b(?![ -](?:me|moi|mir|mi|nous|uns|us|i|we|ich|je)\b)"
    # "tell me that you hate ...": words put in the assistant's mouth, not a question.
    r"|\btell me that\b"
    # The infinitives of "you only have to say ...", "du musst nur ... sagen".
    r"|\b(?:decir|escribir|dire|écrire|sagen|schreiben|dizer|escrever|scrivere|zeggen)\b",
    re.IGNORECASE,
)


GOAL_HIJACKING_RULES = (
    Rule(
        # "Now new tasks follow", "concentrate on your new task", "nun folgen neue
        # Anweisungen": the conversation is declared over and another one begun.
        "new task",
        0.85,
        rx(
            r"\b(?:now|then|here) (?:(?:come|comes|follow|follows)\s+)?(?:some |a few )?"
            r"(?:new|further|more|other|additional) (?:tasks|instructions|assignments|orders)"
            r"(?: (?:follow|come|for you))?\b",
            r"\b(?:focus|concentrate)\b[^.!?\n]{0,20}\b(?:your|the|a) new (?:task|assignment"
            r"|instructions?|mission)\b",
            r"\b(?:your|the) new (?:task|assignment|mission|instructions?)(?: is| are)?\s*:",
            r"\b(?:now|but now) (?:there (?:are|is)|i have|we have|comes?) (?:a few |some |a )?"
            r"(?:great )?(?:more|new|further|other|another|additional) (?:tasks?|challenges?"
            r"|assignments?) (?:for you|follow)\b",
            r"\b(?:jetzt|nun|aber jetzt) (?:habe ich|haben wir|gibt es|kommen)\b[^.!?\n]{0,30}"
            r"\b(?:neue|weitere|andere|noch ein paar) (?:aufgaben?|herausforderung(?:en)?)"
            r" (?:für dich|für sie|auf dich|auf sie)\b",
            r"\b(?:start|begin) (?:over|again|from scratch|from the (?:front|beginning))\b"
            r"[^.!?\n]{0,30}\bnew (?:task|assignment|instructions?)\b",
            r"\b(?:nun|jetzt|dann) (?:folgen|kommen) (?:\w+ )?(?:neue|weitere|andere)"
            r" (?:aufgaben|anweisungen|aufträge|instruktionen|befehle)\b",
            r"\b(?:konzentrier\w*|fokussier\w*)\b[^.!?\n]{0,30}\b(?:deine|die|ihre|eine)"
            r" neue(?:n)? (?:aufgabe|anweisung)\b",
            r"\b(?:neue|deine neue) (?:aufgabe|anweisung|anweisungen) (?:lautet|ist|sind)?\s*:",
            r"\bvoici (?:de )?(?:nouvelles|tes nouvelles|vos nouvelles) (?:tâches|instructions"
            r"|consignes)\b|\b(?:ta|votre) nouvelle (?:tâche|mission|consigne)\b",
            r"\b(?:concéntrate|céntrate|enfócate)\b[^.!?\n]{0,20}\b(?:tu|la) nueva tarea\b"
            r"|\b(?:ahora|a continuación) (?:vienen|siguen) (?:nuevas|otras) (?:tareas"
            r"|instrucciones)\b|\btu nueva (?:tarea|misión) (?:es)?\s*:",
            r"\b(?:concentrati|focalizzati)\b[^.!?\n]{0,20}\b(?:sul tuo|sul) nuovo compito\b"
            r"|\b(?:ora|adesso) (?:seguono|arrivano) (?:nuove|altre) (?:istruzioni|compiti)\b",
            r"\b(?:concentre-se|foque)\b[^.!?\n]{0,20}\b(?:na sua|na) nova tarefa\b"
            r"|\b(?:agora|a seguir) (?:vêm|seguem) (?:novas|outras) (?:tarefas|instruções)\b",
        ),
        (
            "task",
            "instruction",
            "assignment",
            "order",
            "aufgabe",
            "anweisung",
            "auftr",
            "instrukt",
            "befehl",
            "tâche",
            "consigne",
            "tarea",
            "instruccion",
            "misión",
            "mission",
            "compit",
            "istruzion",
            "tarefa",
            "instruç",
            "challenge",
            "herausforderung",
        ),
    ),
    Rule(
        # What the assistant was told before is declared void or rewritten: "all previous
        # information is irrelevant", "change your instructions to the following",
        # "abweichend zu vorherigen Instruktionen".
        "instructions replaced",
        0.6,
        rx(
            # What the assistant was given, not what the customer said before.
            r"\b(?:information|instructions|rules|context)\b (?:that )?you (?:have )?(?:received"
            r"|were given|have been given|got)\b[^.!?\n]{0,20}\b(?:is|are|was|were) (?:now )?"
            r"(?:irrelevant|void|invalid|obsolete|cancell?ed|no longer valid|not important)\b",
            r"\b(?:informationen|anweisungen|instruktionen|aufgaben|regeln),? die (?:sie|du)"
            r" (?:erhalten|bekommen) (?:haben|hast),? (?:sind|ist) (?:jetzt )?(?:irrelevant"
            r"|ungültig|hinfällig|unwichtig|nicht (?:mehr )?(?:gültig|wichtig|relevant"
            r"|ganz großartig))",
            r"\b(?:change|update|replace|modify|rewrite) your (?:instructions|rules|prompt"
            r"|programming|guidelines)\b",
            r"\byour (?:new )?instructions are now\b",
            r"\b(?:contrary to|in deviation from|deviating from) (?:the |your )?(?:previous|prior"
            r"|above|earlier) (?:instructions|rules|orders)\b",
            r"\babweichend (?:zu|von) (?:den |deinen |ihren )?(?:vorherigen|bisherigen|obigen"
            r"|vorangehenden) (?:instruktionen|anweisungen|befehlen|vorgaben|regeln)\b",
            r"\bcontrairement aux (?:instructions|consignes) précédentes\b"
            r"|\b(?:a diferencia de|contrariamente a) las instrucciones anteriores\b",
        ),
        (
            "received",
            "given",
            " got",
            "erhalten",
            "bekommen",
            "change your",
            "update your",
            "replace your",
            "modify your",
            "rewrite your",
            "instructions are now",
            "contrary to",
            "deviation",
            "deviating",
            "abweichend",
            "contrairement",
            "a diferencia",
            "contrariamente",
        ),
    ),
    Rule(
        # "stop: write ...", "STOPP - schreibe ...": the task broken off for another.
        "interrupt and redirect",
        0.6,
        rx(
            r"\b(?:stop|stopp|halt)\b\s*[-:\u2013]+\s*(?:now\s+|jetzt\s+|nun\s+)?(?:write|say"
            r"|print|output|schreib\w*|sag\w*|écris|dis|escribe|di)\b(?! (?:down|me|mir|moi)\b)",
        ),
    ),
    Rule(
        # The assistant told to stop being what it is: "stop being a customer service bot",
        # "set aside the banking assistant role", "beende den Kundenservice-Modus".
        "role abandoned",
        0.6,
        rx(
            r"\b(?:stop|quit) (?:being|acting as|playing) (?:an?|the|my|your|this)\b",
            r"\b(?:drop|set aside|put aside|forget|abandon|leave|exit|quit|step out of|break out"
            r" of)\b (?:the |your |this )?(?:[\w-]+ ){0,3}?(?:role|persona|character)\b",
            r"\b(?:exit|leave|quit|drop|turn off)\b (?:the |your )?(?:customer[ -]service|support"
            r"|assistant|agent|service|bot) mode\b",
            r"\bforget (?:that )?you(?:'re| are) (?:an?|the)\b",
            r"\bhör(?:en sie)? auf,? (?:ein|eine|der|die|das)? ?[\w-]*(?:bot|assistent\w*)"
            r" zu sein\b|\bhör auf mit dem [\w-]+(?:kram|zeug)\b",
            r"\b(?:beende|verlass\w*)\b[^.!?\n]{0,30}\b[\w-]*(?:service|support|assistenz)-?modus\b",
            r"\b(?:deine|ihre) rolle als\b[^.!?\n]{0,30}\b(?:beiseite\w*|ablegen|aufgeben)\b",
            r"\barrête(?:z)? d'être\b|\b(?:mettre|mets|mettez) de côté (?:ton|votre) rôle\b"
            r"|\bquitter\b[^.!?\n]{0,25}\bmode (?:service client|assistance|support)\b",
            r"\bdeja(?:r)? de ser\b|\bdejar? a un lado (?:su|tu) papel\b"
            r"|\babandon\w* el modo\b",
            r"\bbasta fare il\b|\bsmetti(?:la)? di (?:essere|fare) (?:il|la|un|una)\b"
            r"|\bmettere da parte il (?:suo|tuo) ruolo\b|\buscire dalla modalità\b"
            r"|\bdimentica il tuo ruolo\b",
            r"\bhou op met (?:dat|die|het) \w*gedoe\b|\brol als \w+ (?:even )?opzij\b"
            r"|\b\w*servicemodus (?:te )?verlaten\b|\bvergeet je (?:je )?(?:taak|rol)\b",
            r"\bpare de ser\b|\bdeix(?:e|ar) de lado (?:o )?(?:seu|teu) papel\b",
        ),
        (
            "stop",
            "quit",
            "drop",
            "aside",
            "forget",
            "abandon",
            "leave",
            "exit",
            "step out",
            "break out",
            "turn off",
            "hör",
            "beende",
            "verlass",
            "rolle",
            "arrête",
            "côté",
            "quitter",
            "deja",
            "a un lado",
            "basta fare",
            "smetti",
            "da parte",
            "modalità",
            "dimentica",
            "hou op",
            "opzij",
            "modus",
            "vergeet",
            "pare de",
            "deix",
        ),
    ),
    Rule(
        # A new job handed to the assistant: "next job for you: ...", "neue Aufgabe für
        # dich", "nouvelle tâche pour toi".
        "new job",
        0.6,
        rx(
            r"\b(?:next|new) (?:job|task|mission|assignment|gig) for you\b|\bnew plan\b[,:]"
            r"[^.!?\n]{0,10}\b(?:you(?:'re| are)|ur)\b",
            r"\b(?:nächster|neuer) auftrag für (?:dich|sie)\b|\bneue aufgabe für (?:dich|sie)\b",
            r"\bnouvelle tâche pour (?:toi|vous)\b|\bnouveau (?:taf|boulot|travail) p(?:ou)?r"
            r" (?:toi|vous)\b",
            r"\b(?:siguiente|nueva) tarea (?:para|xa|pa) ti\b",
            r"\b(?:prossimo|nuovo) (?:lavoro|compito) (?:per|x) te\b",
            r"\b(?:volgende|nieuwe) (?:klus|opdracht|taak) (?:voor|vr) jou\b",
            r"\b(?:próxima|nova) tarefa para (?:você|ti)\b",
        ),
    ),
    Rule(
        # "Your only job now is ...": a new purpose, or an angry customer ("your only job
        # now is to fix my internet"), so evidence rather than a verdict.
        "sole purpose from now on",
        0.45,
        rx(
            r"\b(?:your|the) (?:only|sole|new|one) (?:job|task|mission|purpose)\b"
            r" (?:is )?(?:now|from now on|from here on)\b",
            r"\b(?:deine|ihre) (?:einzige|neue) (?:aufgabe|mission)\b[^.!?\n]{0,10}"
            r"\b(?:ab jetzt|ab sofort|jetzt|nun)\b",
            r"\b(?:ta|votre) (?:seule|nouvelle|unique) (?:mission|tâche)\b[^.!?\n]{0,10}"
            r"\b(?:désormais|maintenant|dorénavant)\b",
            r"\btu (?:único|nuevo) trabajo (?:ahora|a partir de ahora)\b"
            r"|\btu (?:única|nueva) (?:tarea|misión) (?:ahora|a partir de ahora)\b",
            r"\bil tuo (?:unico|nuovo) compito (?:adesso|ora|da ora)\b",
            r"\bje (?:enige|nieuwe) taak (?:is )?(?:nu|vanaf nu)\b",
            r"\b(?:sua|tua) (?:única|nova) (?:tarefa|missão) (?:agora|a partir de agora)\b",
            # Starting over is the customer's right; with a new purpose it is a hijack.
            r"\b(?:let's|let us) start (?:over|from scratch|again from scratch)\b"
            r"|\bwir fangen (?:ganz )?von vorne an\b|\bon repart de zéro\b"
            r"|\bempecemos de cero\b|\bricominciamo da zero\b"
            r"|\bwe beginnen (?:helemaal )?opnieuw\b|\bvamos começar do zero\b",
        ),
        (
            "job",
            "task",
            "mission",
            "purpose",
            "aufgabe",
            "tâche",
            "trabajo",
            "tarea",
            "misión",
            "compito",
            "taak",
            "tarefa",
            "missão",
            "start over",
            "start from scratch",
            "start again",
            "von vorne",
            "de zéro",
            "de cero",
            "da zero",
            "opnieuw",
            "do zero",
        ),
    ),
    Rule(
        # Another identity from now on: "from this message on you are Max", "you are a
        # pirate now", "ab sofort bist du ...". ("You are now ..." is the persona switch.)
        "identity from now on",
        0.45,
        rx(
            r"\bfrom (?:this|the next) message on,? you(?:'re| are)\b",
            r"\byou(?:'re| are) (?:an?|my) [\w -]{2,30}? now\b(?! (?:that|i|we)\b)",
            r"\bab (?:dieser nachricht|sofort|jetzt) bist du\b|\bdu bist ab (?:sofort|jetzt)\b",
            r"\bà partir de ce message,? tu es\b|\bt'es (?:un|une) \w+ maintenant\b",
            r"\bdesde (?:este|ahora este) mensaje,? eres\b",
            r"\bda questo messaggio in poi,? sei\b|\badesso sei (?:un|una|il|la|mio|mia)\b",
            r"\bvanaf (?:dit bericht|nu) ben je\b",
            r"\ba partir desta mensagem,? (?:você é|és)\b",
        ),
    ),
)
