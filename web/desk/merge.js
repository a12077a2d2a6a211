// Word-level diff and three-way merge of a line's text, for the desk's conflict panel (desk.js;
// docs/desk.md, "When two editors change a line at once"). Text is cut into words, spaces and
// punctuation by Intl.Segmenter, so Arabic and Spanish split as their readers read them, and a
// number such as "6.8" stays one word. No DOM here: the functions take and give plain values.

const SEGMENTERS = new Map();

function segmenter(locale) {
  if (!SEGMENTERS.has(locale)) SEGMENTERS.set(locale, new Intl.Segmenter(locale, { granularity: "word" }));
  return SEGMENTERS.get(locale);
}

// The text as tokens (words, runs of spaces, punctuation), which joined give the text back.
export function tokenize(text, locale) {
  return Array.from(segmenter(locale).segment(text), (part) => part.segment);
}

// The edit script from tokens `a` to tokens `b`, by longest common subsequence: runs of
// {op: "equal" | "delete" | "insert", tokens}. Within a changed run, deletions come first.
export function diffTokens(a, b) {
  const n = a.length;
  const m = b.length;
  // common[i][j]: the length of the longest common subsequence of a[i:] and b[j:]. A line is
  // at most a few hundred characters, so the table stays small.
  const common = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      common[i][j] = a[i] === b[j] ? common[i + 1][j + 1] + 1 : Math.max(common[i + 1][j], common[i][j + 1]);
    }
  }
  const runs = [];
  const push = (op, token) => {
    const last = runs[runs.length - 1];
    if (last && last.op === op) last.tokens.push(token);
    else runs.push({ op, tokens: [token] });
  };
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { push("equal", a[i]); i++; j++; }
    else if (common[i + 1][j] >= common[i][j + 1]) push("delete", a[i++]);
    else push("insert", b[j++]);
  }
  while (i < n) push("delete", a[i++]);
  while (j < m) push("insert", b[j++]);
  return runs;
}

// What changed from `before` to `after`, word by word: [{op, text}], to show with <del> and <ins>.
export function wordDiff(before, after, locale) {
  return diffTokens(tokenize(before, locale), tokenize(after, locale))
    .map(({ op, tokens }) => ({ op, text: tokens.join("") }));
}

// The changes of an edit script as hunks: the base's tokens [start, end) replaced by `tokens`
// (start === end for an insertion). Two hunks of one script never touch: an equal run parts them.
function hunks(runs) {
  const found = [];
  let at = 0;
  let open = null;
  for (const { op, tokens } of runs) {
    if (op === "equal") { at += tokens.length; open = null; continue; }
    if (!open) { open = { start: at, end: at, tokens: [] }; found.push(open); }
    if (op === "delete") { at += tokens.length; open.end = at; }
    else open.tokens.push(...tokens);
  }
  return found;
}

const sameHunk = (x, y) => x.start === y.start && x.end === y.end && x.tokens.join("") === y.tokens.join("");

// Two editors' changes to the same stretch of the base, or to stretches that touch (an insertion
// next to a changed word, two changes to one word), cannot be combined without a person deciding;
// the very same change made by both can.
const clash = (x, y) => x.start <= y.end && y.start <= x.end && !sameHunk(x, y);

// A word-level three-way merge: `mine` and `theirs` each edited `base`. If their changes do not
// overlap, {clean: true, text} holds both applied to the base; otherwise {clean: false, text: mine}.
export function merge3(base, mine, theirs, locale) {
  const baseTokens = tokenize(base, locale);
  const ours = hunks(diffTokens(baseTokens, tokenize(mine, locale)));
  const others = hunks(diffTokens(baseTokens, tokenize(theirs, locale)));
  if (ours.some((x) => others.some((y) => clash(x, y)))) return { clean: false, text: mine };
  const changes = [...ours, ...others.filter((y) => !ours.some((x) => sameHunk(x, y)))]
    .sort((x, y) => x.start - y.start);
  const merged = [];
  let at = 0;
  for (const change of changes) {
    merged.push(...baseTokens.slice(at, change.start), ...change.tokens);
    at = change.end;
  }
  merged.push(...baseTokens.slice(at));
  return { clean: true, text: merged.join("") };
}
