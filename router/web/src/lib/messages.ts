// What to tell people for each error code the router can answer.

/** HTTP API error codes (auth and general). */
const API_MESSAGES: Record<string, string> = {
  invalid_credentials: "Wrong email or password.",
  conflict: "An account with this email already exists. Sign in instead.",
  account_disabled: "This account is disabled. Contact support.",
  builtin_accounts_off:
    "This server signs people in with Supabase Auth; built-in accounts are turned off.",
  invalid_refresh_token: "Your session has ended. Sign in again.",
  token_expired: "Your session expired. Sign in again.",
  invalid_token: "Your session is not valid any more. Sign in again.",
  not_a_user: "This token does not belong to a user. Sign in with your account.",
  unauthorized: "Please sign in.",
  too_many_requests: "Too many attempts. Wait a little and try again.",
  unavailable: "Sign-in is unavailable right now. Retry in a moment.",
  internal: "Something went wrong on our side. Please try again.",
  bad_request: "The request was malformed. Reload the page and try again.",
  payload_too_large: "That is too large to send.",
  quota_exceeded: "Your plan's file storage is full. Delete some files, or change plan on the Account page.",
  unsupported_media_type: "The server did not accept that request format.",
  not_found: "Not found (it may have been deleted).",
  network: "Can't reach the server. Check your connection and try again.",
};

/**
 * The text to show for an API error. For codes whose server message is the most
 * precise thing to say (validation, rate limits) the server's message is used.
 */
export function apiErrorText(code: string, serverMessage?: string): string {
  const precise = ["invalid_request", "too_many_requests", "payload_too_large", "quota_exceeded"];
  if (precise.includes(code) && serverMessage) {
    const m = serverMessage.charAt(0).toUpperCase() + serverMessage.slice(1);
    return m.endsWith(".") ? m : m + ".";
  }
  return API_MESSAGES[code] ?? serverMessage ?? "Something went wrong. Please try again.";
}

/** WebSocket `error` frames: what happened and what to do. */
const CHAT_ERRORS: Record<string, { title: string; action: string }> = {
  rate_limited: {
    title: "You're sending messages too fast.",
    action: "Wait a few seconds, then send again.",
  },
  quota_exceeded: {
    title: "You've used this month's allowance for your plan.",
    action: "Upgrade your plan on the Account page, or wait for next month.",
  },
  subscription_inactive: {
    title: "Your subscription is not active.",
    action: "Renew it on the Account page to keep chatting.",
  },
  payment_required: {
    title: "Your subscription is not active.",
    action: "Renew it on the Account page to keep chatting.",
  },
  agent_crashed: {
    title: "The agent stopped unexpectedly.",
    action: "Send your message again — your workspace restarts by itself and your documents are safe.",
  },
  sandbox_failed: {
    title: "Your workspace could not start.",
    action: "Try again in a minute. If it keeps failing, contact support.",
  },
  workspace_unavailable: {
    title: "Your workspace is unavailable right now.",
    action: "Try again in a minute.",
  },
  upstream_error: {
    title: "The model service had a problem.",
    action: "Send your message again in a moment.",
  },
  model_unavailable: {
    title: "The model service is unavailable.",
    action: "Send your message again in a moment.",
  },
  busy: {
    title: "The agent is still answering.",
    action: "Wait for the answer to finish, or press Stop.",
  },
  bad_frame: {
    title: "The app sent something the server did not accept.",
    action: "Reload the page and try again.",
  },
  invalid_frame: {
    title: "The app sent something the server did not accept.",
    action: "Reload the page and try again.",
  },
  too_large: {
    title: "That message is too long.",
    action: "Shorten it, or save the text as a file and attach it.",
  },
  attachment_not_found: {
    title: "An attached file no longer exists.",
    action: "Remove it from the message (or upload it again) and send again.",
  },
  not_found: {
    title: "This conversation no longer exists.",
    action: "Start a new conversation.",
  },
  unauthorized: {
    title: "Your session is not valid any more.",
    action: "Sign in again.",
  },
  cannot_replace: {
    title: "That message can't be changed now.",
    action: "The conversation is shown as it is stored: wait for its answer to end, then edit again.",
  },
  cannot_rewind: {
    title: "This conversation is older than editing.",
    action: "Its messages can't be edited or regenerated; send a new message instead.",
  },
  voice_unavailable: {
    title: "Spoken answers are not part of your plan.",
    action: "The text answer is complete; upgrade on the Account page to hear answers.",
  },
  voice_failed: {
    title: "The answer could not be spoken.",
    action: "The text answer is complete; try voice again later.",
  },
};

export function chatErrorText(code: string, message?: string): { title: string; action: string } {
  if (CHAT_ERRORS[code]) return CHAT_ERRORS[code];
  if (code.includes("quota")) return CHAT_ERRORS.quota_exceeded;
  return { title: message || "Something went wrong.", action: "Try sending your message again." };
}
