import { createContext, useContext, useEffect, useState, useSyncExternalStore } from "react";
import { Api } from "./lib/api";
import { ChatStore } from "./lib/chatStore";
import type { User } from "./lib/types";

export interface AppServices {
  api: Api;
  chat: ChatStore;
}

export const ServicesContext = createContext<AppServices | null>(null);

export function useServices(): AppServices {
  const s = useContext(ServicesContext);
  if (!s) throw new Error("no services");
  return s;
}

export function useApi(): Api {
  return useServices().api;
}

export function useUser(): User | null {
  const api = useApi();
  const [user, setUser] = useState(api.user);
  useEffect(() => api.onUserChange(setUser), [api]);
  return user;
}

export function useChat() {
  const { chat } = useServices();
  return useSyncExternalStore(chat.subscribe, chat.getSnapshot);
}
