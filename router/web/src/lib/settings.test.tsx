import { act, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { getTheme, setTheme, subscribeTheme, useTheme } from "./settings";

function ThemeProbe({ id }: { id: string }) {
  const { theme, dark } = useTheme();
  return <span data-testid={id}>{`${theme} ${dark ? "dark" : "light"}`}</span>;
}

describe("theme store", () => {
  afterEach(() => setTheme("system"));

  it("saves, applies and tells every subscriber", () => {
    const f = vi.fn();
    const stop = subscribeTheme(f);
    setTheme("dark");
    expect(getTheme()).toBe("dark");
    expect(localStorage.getItem("jarvis.theme")).toBe("dark");
    expect(document.documentElement.classList.contains("dark")).toBe(true);
    expect(f).toHaveBeenCalledTimes(1);
    setTheme("system");
    expect(localStorage.getItem("jarvis.theme")).toBeNull();
    expect(document.documentElement.classList.contains("dark")).toBe(false);
    expect(f).toHaveBeenCalledTimes(2);
    stop();
    setTheme("light");
    expect(f).toHaveBeenCalledTimes(2);
  });

  it("keeps every reader current: a change in one place shows in the others", () => {
    render(
      <>
        <ThemeProbe id="header" />
        <ThemeProbe id="account" />
      </>,
    );
    expect(screen.getByTestId("header")).toHaveTextContent("system light");
    act(() => setTheme("dark"));
    expect(screen.getByTestId("header")).toHaveTextContent("dark dark");
    expect(screen.getByTestId("account")).toHaveTextContent("dark dark");
  });

  it("follows a change made in another tab", () => {
    render(<ThemeProbe id="p" />);
    act(() => {
      localStorage.setItem("jarvis.theme", "dark");
      window.dispatchEvent(new StorageEvent("storage", { key: "jarvis.theme", newValue: "dark" }));
    });
    expect(screen.getByTestId("p")).toHaveTextContent("dark dark");
    expect(document.documentElement.classList.contains("dark")).toBe(true);
  });
});
