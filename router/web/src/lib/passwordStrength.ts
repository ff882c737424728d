// Password strength with zxcvbn-ts (common passwords, names, keyboard rows,
// sequences, dates): loaded on demand by PasswordMeter, so the first load stays
// small. The server checks again with the same rule (score 3 or more).
import { ZxcvbnFactory } from "@zxcvbn-ts/core";
import * as common from "@zxcvbn-ts/language-common";

/** The least score (0–4) the server accepts. */
export const MIN_SCORE = 3;

const translations = {
  warnings: {
    straightRow: "Straight rows of keys are easy to guess.",
    keyPattern: "Short keyboard patterns are easy to guess.",
    simpleRepeat: 'Repeated characters like "aaa" are easy to guess.',
    extendedRepeat: 'Repeated patterns like "abcabcabc" are easy to guess.',
    sequences: 'Sequences like "abc" or "6543" are easy to guess.',
    recentYears: "Recent years are easy to guess.",
    dates: "Dates are easy to guess.",
    topTen: "This is one of the ten most common passwords.",
    topHundred: "This is one of the hundred most common passwords.",
    common: "This is a very common password.",
    similarToCommon: "This is similar to a commonly used password.",
    wordByItself: "A word on its own is easy to guess.",
    namesByThemselves: "Names on their own are easy to guess.",
    commonNames: "Common names are easy to guess.",
    userInputs: "It contains your email address.",
    pwned: "This password appeared in a data breach.",
  },
  suggestions: {
    l33t: "Swapping letters for look-alikes (a → @) does not help much.",
    reverseWords: "Spelling a common word backwards does not help much.",
    allUppercase: "Capitalize some letters, not all.",
    capitalization: "Capitalize more than the first letter.",
    dates: "Avoid dates and years connected to you.",
    recentYears: "Avoid recent years.",
    associatedYears: "Avoid years connected to you.",
    sequences: "Avoid common character sequences.",
    repeated: "Avoid repeated words and characters.",
    longerKeyboardPattern: "Use longer keyboard patterns with more turns.",
    anotherWord: "Add more words that are less common.",
    useWords: "Use several words, but avoid common phrases.",
    noNeed: "No symbols, digits or capitals needed: length does it.",
    pwned: "If you use this password elsewhere, change it there.",
  },
  timeEstimation: {
    ltSecond: "less than a second",
    second: "{base} second",
    seconds: "{base} seconds",
    minute: "{base} minute",
    minutes: "{base} minutes",
    hour: "{base} hour",
    hours: "{base} hours",
    day: "{base} day",
    days: "{base} days",
    month: "{base} month",
    months: "{base} months",
    year: "{base} year",
    years: "{base} years",
    centuries: "centuries",
  },
};

const zxcvbn = new ZxcvbnFactory({
  dictionary: { ...common.dictionary },
  graphs: common.adjacencyGraphs,
  translations,
});

export interface Strength {
  /** 0 (guessed at once) to 4 (very hard). */
  score: number;
  /** Whether the server will accept it. */
  ok: boolean;
  /** Why it is weak, when it is. */
  warning: string | null;
  /** What to do instead. */
  suggestions: string[];
}

export function checkPassword(password: string, email = ""): Strength {
  const local = email.split("@")[0] ?? "";
  const r = zxcvbn.check(password.slice(0, 256), [email, local].filter(Boolean));
  return {
    score: r.score,
    ok: r.score >= MIN_SCORE,
    warning: r.feedback.warning || null,
    suggestions: r.feedback.suggestions ?? [],
  };
}
