"""Each kind of answer the cascade must read (issue: data quality that
generalizes), written for these tests and kept out of the labelled sets.
`grade` is the worker's whole-generation check (extraction + comparison)."""

import pytest

from factory.verify.extract import candidates, extract_answer
from factory.verify.normalize import grade, load_preset, load_rules, raw_compare

RULES = load_rules()
DEFAULT = load_preset("default")
STRICT = load_preset("strict")
T = "<think>\nworking it out\n</think>\n\n"


def ok(gold, generation, problem=None, finish="stop", opts=DEFAULT):
    return grade(gold, generation, finish, problem, opts, RULES)[0]


CORRECT = [
    # answers not in a box
    ("no_box", "17", T + "Adding both groups, the answer is $17$."),
    ("no_box", "17", T + "**Final Answer:** 17"),
    ("no_box", "17", T + "Final answer: 17"),
    ("no_box", "17", T + "We add 9 and 8.\n\n17"),
    ("no_box", "17", T + "Solving the equation gives\n$y = 17$"),
    ("no_box", "64", T + "Hence there are 64 squares on the board."),
    ("number_format", "3250000", T + "The population is 3,250,000."),
    ("number_format", "2000", T + "So the answer is 2 000."),
    ("number_format", "2000", T + "The total is $\\boxed{2000.0}$."),
    # several boxes form the answer
    ("multi_box", "-1, 4", T + "The roots are $x = \\boxed{-1}$ and $x = \\boxed{4}$."),
    ("multi_box", "\\{-1, 4\\}", T + "So $\\boxed{4}$ or $\\boxed{-1}$."),
    # complex numbers in another form
    ("complex", "3i", T + "In polar form the answer is $\\boxed{3e^{i\\pi/2}}$."),
    ("complex", "13", T + "$\\boxed{(3+2i)(3-2i)}$"),
    ("complex", "-i", T + "$\\boxed{\\frac{1}{i}}$"),
    ("complex", "2+i", T + "$\\boxed{i(1-2i)}$"),
    # scientific notation against the plain integer
    ("sci", "45000", T + "$\\boxed{4.5 \\times 10^{4}}$"),
    ("sci", "2500000", T + "Final answer: 2.5e6"),
    # one answer, three spellings
    ("pm", "\\{-3, 3\\}", T + "$\\boxed{x = \\pm 3}$"),
    ("pm", "\\pm 3", T + "$\\boxed{x = 3 \\text{ or } x = -3}$"),
    ("pm", "x = \\pm 3", T + "$\\boxed{\\{-3, 3\\}}$"),
    # a text answer with an explanation after it
    ("text", "No", T + "No, it cannot be done: every move keeps the sum even."),
    ("text", "Yes", T + "Yes. Since 51 = 3 * 17, it is composite."),
    # non-English final sentences
    ("non_english", "14", T + "Donc la réponse est 14."),
    ("non_english", "14", T + "Por lo tanto, la respuesta es 14."),
    ("non_english", "14", T + "Die Antwort ist 14."),
    ("non_english", "14", T + "所以答案是 14。"),
    ("non_english", "14", T + "Ответ: 14"),
    ("non_english", "3.5", T + "Portanto, a resposta é 3,5."),
    # percent
    ("percent", "37.5\\%", T + "$\\boxed{0.375}$"),
    ("percent", "0.375", T + "$\\boxed{37.5\\%}$"),
    ("percent", "60\\%", T + "$\\boxed{\\frac{3}{5}}$"),
    # multiple choice: a letter against the option's value
    ("mcq", "B", T + "$\\boxed{12}$", "Which is even? (A) 7 (B) 12 (C) 9 (D) 15"),
    ("mcq", "B", T + "**Answer: B**", "Which is even? (A) 7 (B) 12 (C) 9 (D) 15"),
    ("mcq", "B", T + "The correct option is B.", "Which is even? (A) 7 (B) 12 (C) 9 (D) 15"),
    # intervals and relations
    ("interval", "(-1, 3]", T + "$\\boxed{-1 < x \\le 3}$"),
    ("interval", "x \\in [2, 5]", T + "$\\boxed{2 \\le x \\le 5}$"),
    ("relation", "g(t) = 3t - 1", T + "$\\boxed{y = 3t - 1}$"),
    # one quantity in another unit, a vector as a tuple, roots listed in prose
    ("units", "1.5\\text{ hours}", T + "$\\boxed{90\\text{ minutes}}$"),
    ("units", "4\\text{ km}", T + "$\\boxed{4000\\text{ m}}$"),
    ("vector", "\\begin{pmatrix} 2 \\\\ 7 \\end{pmatrix}", T + "$\\boxed{(2, 7)}$"),
    ("listed", "\\pm 4", T + "So the two solutions are 4 and -4."),
    ("text", "\\text{odd}", T + "Hence the function is odd, because $f(-x) = -f(x)$."),
    ("non_english", "5000", T + "Es sind also 5.000 Meter."),
    # numerals in a base, multi-select letters, named left-hand sides
    ("base", "\\text{1A}_{16}", T + "$\\boxed{1a}$"),
    ("base", "110_2", T + "In binary this is $\\boxed{110_{2}}$."),
    ("letters", "AC", T + "**Answer:** A and C", "Which are prime? A. 7 B. 9 C. 11 D. 15"),
    ("relation", "g^{-1}(x) = 3x - 6", T + "$\\boxed{y = 3x - 6}$"),
    ("set", "\\{1, 5\\}", T + "**Answer:** $P \\cup Q = \\{5, 1\\}$"),
    # compound quantities, percent in words, a float's repr, a word that answers yes/no
    ("units", "75\\text{ minutes}", T + "The film lasts 1 hour and 15 minutes."),
    ("units", "1.25\\text{ m}", T + "$\\boxed{1\\text{ m } 25\\text{ cm}}$"),
    ("percent", "25\\%", T + "**Answer:** 25 percent"),
    ("percent", "8\\%", T + "The final answer is: the price rose by 8 percent over the year."),
    ("float", "0.3", T + "$\\boxed{0.30000000000000004}$"),
    ("text", "\\text{No}", T + "$\\boxed{\\text{Divergent}}$", "Is the sequence $a_n = n$ convergent?"),
    ("text", "\\text{Yes}", T + "So the relation is $\\boxed{\\text{symmetric}}$.", "Is the relation R symmetric?"),
    ("text", "\\text{obtuse}", T + "$\\boxed{\\text{Obtuse triangle}}$", "Is the triangle with sides 2, 3, 4 acute, right or obtuse?"),
    # a problem in parts, cis with degrees, spelt-out roots, the unit asked for, words for "none"
    ("parts", "(a) 4; (b) 9", T + "(a) $\\boxed{4}$, (b) $\\boxed{9}$"),
    ("complex", "2i", T + "$\\boxed{2\\operatorname{cis} 90^\\circ}$"),
    ("pm", "\\pm 5", T + "So y = 5 or y = −5"),
    ("units", "3", T + "Walking 12 km at 4 km/h takes 180 minutes.", "How many hours does the walk take?"),
    ("text", "\\varnothing", T + "Both conditions cannot hold at once, so the set is the empty set."),
    ("text", "\\text{DNE}", T + "Approaching from the left and the right gives different values, so it does not exist."),
    ("no_box", "9", T + "The answer is not 8 (that counts the start twice); it is 9."),
    ("text", "No", T + "The sum of the angles would pass 180 degrees, so this is impossible.", "Can a triangle have two right angles?"),
    ("text", "\\text{infinitely many}", T + "So there are infinitely many such pairs, one for every n."),
    ("units", "\\$4.20", T + "Altogether she pays 4 dollars and 20 cents."),
    ("matrix", "\\begin{pmatrix} 1 & 0 & 0 \\\\ 0 & 1 & 0 \\\\ 0 & 0 & 1 \\end{pmatrix}", T + "The product is $\\boxed{I_3}$."),
    ("no_box", "7", T + "The largest value is $7$, reached when $t = 1$."),
    # what the question asks picks the value out of a prose answer
    ("asked", "6", T + "A hexagon has 6 sides and 9 diagonals.", "How many sides does a hexagon have?"),
    ("asked", "0", T + "There are no such primes.", "How many even primes greater than 2 are there?"),
    ("asked", "3", T + "The quotient is $3$ and the remainder is $2$.", "What is the quotient when 11 is divided by 3?"),
    ("asked", "40\\%", T + "So 8 is 40% of 20.", "What percent of 20 is 8?"),
    ("asked", "5", T + "$g(2) = 5$, using the rule above twice.", "Let $g(x)=2x+1$. Compute $g(2)$."),
    ("asked", "60", T + "Its average speed is 60 km/h across the 2 hours and 120 km.",
     "A car covers 120 km in 2 hours. What is its average speed?"),
    ("asked", "4", T + "The least such $k$ is 4, since $3^2 = 9$ is still below 10.", "Find the least integer $k$ with $k^2 > 10$."),
    # labelled values, scale words, scalar multiples of I, unicode, clock times, e-notation in a chain
    ("named", "\\text{gcd } 6, \\text{ lcm } 36", T + "gcd $\\boxed{6}$ and lcm $\\boxed{36}$."),
    ("largenum", "3400000", T + "$\\boxed{3.4\\text{ million}}$"),
    ("matrix", "\\begin{pmatrix} 3 & 0 \\\\ 0 & 3 \\end{pmatrix}", T + "$\\boxed{3I}$"),
    ("unicode", "2\\pi", T + "The circumference is 2π."),
    ("unicode", "\\frac{2}{3}", "⅓ + ⅓ = ⅔"),
    ("clock", "7:05 \\text{ AM}", T + "She wakes up at 7:05 a.m."),
    ("sci", "3 \\times 10^{-4}", T + "0.0003 = 3e-4"),
    ("text", "\\text{no solution}", T + "This cannot happen: no real number satisfies both equations."),
    # a scale word after a prose number, unnormalised mantissas, ASCII +/- and sqrt(), a braced decimal
    # comma, \varnothing, plain formulas with function names, unicode minus and vulgar fractions
    ("largenum", "42000000", T + "So the city ends the decade with about 42 million residents.",
     "How many residents does the city have at the end?"),
    ("sci", "6.5 \\times 10^{-3}", T + "The result is $0.65 \\times 10^{-2}$."),
    ("sci", "3.06 \\times 10^{22}", T + "$\\boxed{30.6 \\times 10^{21}}$"),
    ("pm", "-3 \\pm \\sqrt{5}", T + "**Answer:** x = -3 +/- sqrt(5)"),
    ("non_english", "3.75", T + "Also ist die Lösung $x = 3{,}75$."),
    ("set", "\\{\\emptyset, \\{a\\}\\}", T + "$$\\mathcal{P}(\\{a\\}) = \\{\\varnothing, \\{a\\}\\}$$"),
    ("unicode", "\\frac{\\pi}{6}", T + "arcsin(1/2) = π/6"),
    ("unicode", "-\\frac{3}{4}", T + "tan(θ) = −¾"),
    # a number word names the asked quantity in prose
    ("asked_words", "12", T + "A cube has twelve edges in all.", "How many edges does a cube have?"),
    ("asked_words", "24", T + "So the class has twenty-four students (a dozen pairs).", "How many students are in the class?"),
    # set-builder notation for an interval
    ("set_builder", "(-\\infty, 3)", T + "The solution set is $\\{x : x < 3\\}$."),
    ("set_builder", "[2,\\infty)", T + "$\\boxed{\\{x \\in \\mathbb{R} \\mid x \\geq 2\\}}$"),
    # a gold with a sign against its two values written as membership
    ("pm_member", "2\\pm 5", T + "So $x \\in \\{7, -3\\}$."),
    ("pm_member", "\\pm 4", T + "$\\boxed{x \\in \\{-4, 4\\}}$"),
    # a time of day inside \text{} against the 24-hour clock
    ("clock_text", "\\text{9:15 AM}", T + "The train arrives at 09:15."),
    ("clock_text", "\\text{11:40 PM}", T + "It ends at $\\boxed{23:40}$."),
    # a clock time without AM/PM against one with it: the bare one does not say which half
    ("clock_half", "4:10", T + "The bus leaves at 4:10 PM.\n\n**Answer:** 4:10 PM"),
    ("clock_half", "\\text{7:05 AM}", T + "So the alarm rings at 7:05."),
    # set operations and relations typed in unicode, outside LaTeX
    ("unicode_sets", "\\{2,6\\}", T + "The common elements are 2 and 6.\n\nP ∩ Q = {2, 6}"),
    ("unicode_sets", "\\emptyset", T + "No element is in both.\n\nC ∩ D = ∅"),
    ("unicode_sets", "\\{a,b,c\\}", T + "X ∪ Y = {a, b, c}"),
    ("plain_inequality", "[-3,4]", T + "Both conditions hold for -3 ≤ t ≤ 4."),
    ("plain_inequality", "(7,\\infty)", T + "Therefore the values are y > 7"),
    # a gold that lists values, against a last line that names each
    ("labelled_values", "(-1,4), 3", T + "So the center is $(-1,4)$ and the radius is $3$."),
    ("labelled_values", "2, 8", T + "Minimum $2$, maximum $8$."),
    # a word answer inside the sentence after a final-answer phrase
    ("word_in_sentence", "\\text{obtuse}", T + "**Final Answer:** The triangle is obtuse.",
     "Is the triangle with sides 4, 5, 8 acute, right or obtuse?"),
    # a percentage in words
    ("word_percent", "15\\%", T + "The price is $1.15$ times the old one, so it rose by fifteen percent."),
    # an angle assigned to a Greek letter typed in unicode, against radians
    ("greek_degrees", "\\frac{\\pi}{3}", T + "So the angle is\n\nα = 60°", "Find the angle (radians or degrees)."),
    ("plain_degrees", "\\frac{\\pi}{4}", T + "The smallest such angle is θ = 45°.", "Find the smallest positive $x$ with $\\tan x = 1$."),
    # roots with unicode subscripts, and a set typed in plain text
    ("subscripts", "2 \\pm \\sqrt{3}", T + "x₁ = 2 + √3, x₂ = 2 − √3"),
    ("subscripts", "\\pm 5", T + "Both signs work:\nx₁ = 5, x₂ = −5"),
    ("plain_set", "-3, -1, 1, 3", T + "Hence the solution set is x ∈ {±1, ±3}."),
    ("plain_set", "2\\sqrt{2}", T + "x = √2, so x³ = 2 × √2.\nFinal: 2√2"),
    # a change said in words, a gold with its sign
    ("decrease_words", "-10\\%", T + "Overall the price drops by 10%.", "What is the overall percent change in price?"),
    # a number with a unit word and copula in Japanese or Chinese
    ("cjk_unit", "45 \\text{ minutes}", T + "したがって、答えは 45 分です。"),
    ("cjk_unit", "12", T + "所以答案是 12 个。"),
    # prices in plain text with dollar signs
    ("prices", "\\$750", T + "The total is 3 × $250 = $750.", "Each chair costs $\\$250$. What is the total for 3 chairs?"),
    # a repeating decimal written with dots, a percent with a half in words
    ("dots", "0.1\\overline{6}", T + "So 1/6 = 0.1666…"),
    ("word_percent", "37.5\\%", T + "Three eighths is thirty-seven and a half percent."),
    # the count said first, then explained with other counts of the same thing
    ("said_first", "8", T + "A cube has 8 vertices: each of its 6 faces has 4 vertices, and each vertex is on 3 faces.",
     "How many vertices does a cube have?"),
    # a computation chain whose last member is written with German thousands dots
    ("chain_forms", "41250", T + "Also ist $1650 \\cdot 25 = 41.250$."),
    # Yes opening the last line of a paragraph, after the working
    ("yes_last_line", "\\text{Yes}", T + "$P(A) = \\frac{1}{2}$ and $P(B) = \\frac{1}{3}$.\nYes — A is more likely, since 1/2 > 1/3."),
    # plain-text scientific notation, unicode superscripts
    ("plain_sci", "2.4 \\times 10^{9}", T + "So the total is about 2.4·10^9 bytes."),
    ("plain_sci", "3 \\times 10^{-4}", T + "The probability is roughly 3 × 10⁻⁴."),
    # an expression after a label and a colon
    ("label_colon", "2\\sqrt{3}+2", T + "Rationalizing the denominator: 8/(2√3 − 2) = 2√3 + 2"),
]

WRONG = [
    ("percent", "37.5\\%", T + "$\\boxed{0.375\\%}$"),  # stays wrong
    ("percent", "0.375", T + "$\\boxed{0.375\\%}$"),
    ("pm", "\\{-3, 3\\}", T + "$\\boxed{x = 3}$"),
    ("pm", "3", T + "$\\boxed{\\pm 3}$"),
    ("units", "7\\text{ m}", T + "$\\boxed{7\\text{ cm}}$"),
    ("exact", "\\frac{2}{3}", T + "$\\boxed{0.666667}$"),
    ("exact", "\\sqrt{3}", T + "$\\boxed{1.732051}$"),
    ("exact", "\\pi", T + "$\\boxed{3.14159}$"),
    ("relation", "y = 3x + 2", T + "$\\boxed{y = 3x - 2}$"),
    ("relation", "4x + y = 2", T + "$\\boxed{2}$"),
    ("complex", "2-i", T + "$\\boxed{2+i}$"),
    ("text", "No", T + "Yes, it can be done in three moves."),
    ("mcq", "B", T + "$\\boxed{(C)\\ 9}$", "Which is even? (A) 7 (B) 12 (C) 9 (D) 15"),
    ("mcq", "E", T + "$\\boxed{\\mathrm{E}\\cdot 3}$"),
    ("no_box", "12", T + "So 4 times 3 is 12, and next we check the remaining cases against the rules."),
    ("no_box", "12", T + "4 times 3 gives 12. The final answer is"),
    ("no_box", "7", "AB7X"),
    ("units", "1.5\\text{ hours}", T + "$\\boxed{90\\text{ seconds}}$"),
    ("units", "4\\text{ km}", T + "$\\boxed{4000\\text{ g}}$"),
    ("vector", "\\begin{pmatrix} 2 \\\\ 7 \\end{pmatrix}", T + "$\\boxed{(7, 2)}$"),
    ("text", "\\text{odd}", T + "Hence the function is not odd."),
    ("base", "\\text{1A}_{16}", T + "$\\boxed{1B}$"),
    ("base", "110_2", T + "$\\boxed{110_{3}}$"),
    ("letters", "AC", T + "**Answer:** A, C and D", "Which are prime? A. 7 B. 9 C. 11 D. 15"),
    ("relation", "g^{-1}(x) = 3x - 6", T + "$\\boxed{y = 3x + 6}$"),
    ("set", "\\{1, 5\\}", T + "**Answer:** $P \\cup Q = \\{1, 5, 7\\}$"),
    ("units", "75\\text{ minutes}", T + "The film lasts 1 hour and 25 minutes."),
    ("units", "75\\text{ minutes}", T + "The film lasts 1 hour and 15 seconds."),
    ("percent", "25\\%", T + "**Answer:** 0.25 percent"),
    ("float", "\\frac{1}{3}", T + "Express as a fraction: $\\boxed{0.3333333333333333}$"),
    ("text", "\\text{No}", T + "$\\boxed{\\text{Convergent}}$", "Is the sequence $a_n = 1/n$ convergent?"),
    ("text", "\\text{Yes}", T + "$\\boxed{\\text{not symmetric}}$", "Is the relation R symmetric?"),
    ("text", "\\text{obtuse}", T + "$\\boxed{\\text{Acute triangle}}$", "Is the triangle with sides 2, 3, 4 acute, right or obtuse?"),
    ("parts", "(a) 4; (b) 9", T + "(a) $\\boxed{4}$, (b) $\\boxed{8}$"),
    ("complex", "2i", T + "$\\boxed{2\\operatorname{cis} 45^\\circ}$"),
    ("mcq", "C", T + "It is (C) or maybe (D).", "Pick one: (A) 1 (B) 2 (C) 3 (D) 4"),
    ("units", "3", T + "$\\boxed{10800}$, that is 10800 seconds.", "How many hours does the walk take?"),
    ("no_box", "9", T + "One could say 9, but the count is not 9; it is 10, because both ends count."),
    ("no_box", "9", T + "The answer is not 9."),
    ("text", "Yes", T + "Hence such a tiling is possible.", "Is it impossible to tile the board?"),
    ("units", "\\$4.20", T + "Altogether she pays 4 dollars and 2 cents."),
    ("matrix", "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", T + "$\\boxed{I_3}$"),
    ("percent", "30", T + "$\\boxed{30\\%}$", "A coat costs $\\$100$ and drops to $\\$70$. By how many dollars did it drop?"),
    ("no_box", "7", T + "The largest value is $6$, reached when $t = 7$."),
    ("asked", "9", T + "A hexagon has 6 sides and 9 diagonals.", "How many sides does a hexagon have?"),
    ("asked", "2", T + "The remainder is $1$ at first, but the remainder is $2$ after the carry.",
     "What is the remainder when 11 is divided by 3?"),  # two remainders said: nothing is picked
    ("asked", "20\\%", T + "So 8 is 40% of 20.", "What percent of 20 is 8?"),
    ("named", "\\text{gcd } 6, \\text{ lcm } 36", T + "gcd $\\boxed{36}$ and lcm $\\boxed{6}$."),
    ("named", "\\text{gcd } 6, \\text{ lcm } 36", T + "**Answer:** lcm 6, gcd 36"),
    ("largenum", "3400000", T + "$\\boxed{3.4\\text{ billion}}$"),
    ("matrix", "\\begin{pmatrix} 3 & 0 \\\\ 0 & 3 \\end{pmatrix}", T + "$\\boxed{-3I}$"),
    ("clock", "7:05 \\text{ AM}", T + "She wakes up at 7:05 p.m."),
    ("units", "250", T + "$\\boxed{250\\text{ mm}}$", "How many centimeters are in 2.5 meters?"),
    ("trap", "20", T + "**Final Answer:** 20\n\nWait, the overlap must not be removed, so the answer is $12 + 8 = 25$."),
    ("text", "\\text{no solution}", T + "No real number satisfies the first equation, so $x = 3$ is the only solution."),
    ("largenum", "42000000", T + "So the city ends the decade with about 4.2 million residents.",
     "How many residents does the city have at the end?"),
    ("sci", "6.5 \\times 10^{-3}", T + "The result is $6.5 \\times 10^{-2}$."),
    ("sci", "1.2 \\times 10^{24}", T + "$\\boxed{12.04 \\times 10^{23}}$"),  # exact: not equal after float rounding
    ("pm", "-3 \\pm \\sqrt{5}", T + "**Answer:** x = 3 +/- sqrt(5)"),
    ("non_english", "3.75", T + "Also ist die Lösung $x = 3{,}57$."),
    ("set", "\\{\\emptyset, \\{a\\}\\}", T + "$$\\mathcal{P}(\\{a\\}) = \\{\\{a\\}\\}$$"),
    ("unicode", "\\frac{\\pi}{6}", T + "arcsin(1/2) = π/3"),
    ("unicode", "-\\frac{3}{4}", T + "tan(θ) = ¾"),
    ("asked_words", "12", T + "A cube has eleven edges in all.", "How many edges does a cube have?"),
    ("asked_words", "12", T + "A cube has twelve vertices.", "How many edges does a cube have?"),
    ("set_builder", "(-\\infty, 3)", T + "The solution set is $\\{x \\mid x \\le 3\\}$."),
    ("pm_member", "2\\pm 5", T + "So $x \\in \\{7, 3\\}$."),
    ("clock_text", "\\text{4:30 PM}", T + "The movie ends at 04:30."),
    ("clock_half", "4:10", T + "**Answer:** 5:10 PM"),
    ("clock_half", "\\text{7:05 AM}", T + "So the alarm rings at 7:05 PM."),
    ("clock_half", "\\text{7:05 PM}", T + "So the alarm rings at 07:05."),
    ("unicode_sets", "\\{2,6\\}", T + "P ∩ Q = {2, 7}"),
    ("unicode_sets", "\\emptyset", T + "C ∩ D = {4}"),
    ("unicode_sets", "\\{a,b,c\\}", T + "X ∩ Y = {a, b}"),
    ("plain_inequality", "[-3,4]", T + "Both conditions hold for -3 < t ≤ 4."),
    ("plain_inequality", "(7,\\infty)", T + "Therefore the values are y ≥ 7"),
    ("plain_inequality", "(7,\\infty)", T + "Therefore the values are y < 7"),
    ("labelled_values", "(-1,4), 3", T + "So the center is $(-1,4)$ and the radius is $9$."),
    ("labelled_values", "(-1,4), 3", T + "So the center is $(1,-4)$, radius $3$."),
    ("word_in_sentence", "\\text{obtuse}", T + "**Final Answer:** The triangle is not obtuse; it is acute.",
     "Is the triangle with sides 4, 5, 6 acute, right or obtuse?"),
    # `No` opening a noun phrase is not the answer No
    ("leading_no", "\\text{No}", T + "No divisor below 12 works, so yes, 143 is prime."),
    ("word_percent", "15\\%", T + "The price is $1.15$ times the old one, so it rose by fifty percent."),
    ("greek_degrees", "\\frac{\\pi}{3}", T + "So the angle is\n\nα = 30°", "Find the angle (radians or degrees)."),
    ("plain_degrees", "\\frac{\\pi}{4}", T + "The smallest such angle is θ = 135°.", "Find the smallest positive $x$ with $\\tan x = -1$."),
    # a gold in degrees asks for degrees: an answer in radians is not read as one (calibration's deg-* cases)
    ("gold_degrees", "60^\\circ", T + "Each angle is $\\boxed{\\frac{\\pi}{3}}$ radians."),
    ("subscripts", "2 \\pm \\sqrt{3}", T + "x₁ = 2 + √3, x₂ = 2 + √3"),
    ("subscripts", "\\pm 5", T + "x₁ = 5"),
    ("plain_set", "-3, -1, 1, 3", T + "Hence the solution set is x ∈ {±1, 3}."),
    ("decrease_words", "-10\\%", T + "Overall the price rises by 10%.", "What is the overall percent change in price?"),
    ("decrease_words", "10\\%", T + "Overall the price drops by 1%.", "By what percent does the price drop?"),
    ("cjk_unit", "45 \\text{ minutes}", T + "したがって、答えは 54 分です。"),
    ("prices", "\\$750", T + "The total is 3 × $250 = $700.", "Each chair costs $\\$250$. What is the total for 3 chairs?"),
    ("dots", "0.1\\overline{6}", T + "So 1/6 = 0.1777…"),
    ("word_percent", "37.5\\%", T + "Three eighths is thirty-five and a half percent."),
    ("said_first", "8", T + "A cube has 6 faces: each of them has 4 vertices.", "How many vertices does a cube have?"),
    ("chain_forms", "41250", T + "Also ist $1650 \\cdot 25 = 41.520$."),
    ("yes_last_line", "\\text{Yes}", T + "$P(A) = \\frac{1}{3}$ and $P(B) = \\frac{1}{2}$.\nNo — B is more likely, since 1/2 > 1/3."),
    ("plain_sci", "2.4 \\times 10^{9}", T + "So the total is about 2.4·10^8 bytes."),
    ("label_colon", "2\\sqrt{3}+2", T + "Rationalizing the denominator: 8/(2√3 − 2) = 2√3 − 2"),
    # a gold with a variable or an imaginary part is not answered by a bare number (Math-Verify says it is)
    ("letters_lost", "6x", T + "Everything cancels but the constants:\n$\\boxed{6}$"),
    ("letters_lost", "3e^{i\\pi/4}", T + "The modulus is 3 and the argument is π/2, so\n1 + i = 3e^{iπ/2}"),
]


def _cases(rows):
    return pytest.mark.parametrize("gold, gen, problem", [(c[1], c[2], c[3] if len(c) > 3 else None) for c in rows],
                                   ids=[f"{c[0]}-{i}" for i, c in enumerate(rows)])


@_cases(CORRECT)
def test_kinds_of_correct_answer(gold, gen, problem):
    assert ok(gold, gen, problem), (gold, candidates(gen))


@_cases(WRONG)
def test_kinds_of_wrong_answer(gold, gen, problem):
    assert not ok(gold, gen, problem), (gold, candidates(gen))


def test_superset_of_raw_math_verify_on_these_cases():
    """Where raw Math-Verify says correct and the answer is right, so does the cascade."""
    for kind, gold, gen, *problem in CORRECT:
        if raw_compare(gold, gen):
            assert ok(gold, gen, problem[0] if problem else None), (kind, gold, gen)


def test_nothing_from_an_unfinished_trace_counts():
    assert not ok("17", "The answer is $\\boxed{17}$. Let me check once more", finish="length")
    assert not ok("17", "<think>\nthe answer is \\boxed{17}")
    assert grade("17", "<think>\nthe answer is \\boxed{17}", "stop", None, DEFAULT, RULES) == (False, None)


def test_strict_format_counts_boxed_answers_only():
    assert ok("17", T + "$\\boxed{17}$", opts=STRICT)
    assert not ok("17", T + "The answer is $17$.", opts=STRICT)
    assert not ok("17", T + "17", opts=STRICT)
    assert ok("17", T + "The answer is $17$.")  # the default reads it


def test_extraction_order():
    # boxes first; all of them together when there are several
    assert candidates(T + "\\boxed{2} and \\boxed{3}") == ["3", "2, 3"]
    # a final-answer phrase after the last box wins over it
    assert candidates(T + "so $\\boxed{40}$ each, and in all Final Answer: 120")[0] == "120"
    # then phrases, then the last expression of the last line
    assert extract_answer(T + "The answer is $x^2$.") == "x^2"
    assert extract_answer(T + "First 3, then 4.\n\nThe total is $7$") == "7"
    # only what comes after </think>
    assert extract_answer("<think>\n\\boxed{9}\n</think>\n\nI am not sure.") is None
    # an empty box is a template echo, not an answer
    assert candidates("Put the answer in \\boxed{}") == []
