import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { EmptyChat, EXAMPLE_PROMPTS } from "./EmptyChat";

describe("EmptyChat", () => {
  it("offers example prompts and sends the one picked", async () => {
    const onPick = vi.fn();
    render(<EmptyChat onPick={onPick} />);
    const buttons = screen.getAllByTestId("example-prompt");
    expect(buttons).toHaveLength(EXAMPLE_PROMPTS.length);
    await userEvent.click(buttons[1]);
    expect(onPick).toHaveBeenCalledWith(EXAMPLE_PROMPTS[1].prompt);
  });
});
