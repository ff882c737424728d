import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeAll, describe, expect, it, vi } from "vitest";
import Markdown from "./Markdown";
import { ToolActivity } from "./ToolActivity";

describe("ToolActivity (readable tool cards)", () => {
  beforeAll(() => import("./Markdown"), 30_000);

  it("shows an Edit as its file and a +/− diff", async () => {
    render(
      <ToolActivity
        part={{
          kind: "tool",
          id: "t1",
          name: "Edit",
          input: { file_path: "/workspace/app.py", old_string: "x = 1\ny = 2\n", new_string: "x = 1\ny = 3\n" },
          result: { content: "The file was updated", isError: false },
        }}
      />,
    );
    const toggle = screen.getByRole("button", { name: /Edited app\.py/ });
    expect(toggle).toHaveTextContent("done");
    await userEvent.click(toggle);
    const diff = await screen.findByTestId("tool-diff");
    expect(diff.querySelector("del")).toHaveTextContent("− removed: y = 2");
    expect(diff.querySelector("ins")).toHaveTextContent("+ added: y = 3");
    expect(diff).toHaveTextContent("1 line added, 1 removed");
    expect(screen.getByTestId("tool-result")).toHaveTextContent("The file was updated");
  });

  it("shows a Write's file name, its content on demand, and marks errors", async () => {
    render(
      <ToolActivity
        part={{
          kind: "tool",
          id: "t2",
          name: "Write",
          input: { file_path: "/workspace/hello.rs", content: "fn main() {}\n" },
          result: { content: "permission denied", isError: true },
        }}
      />,
    );
    const toggle = screen.getByRole("button", { name: /Could not write hello\.rs/ });
    expect(toggle).toHaveTextContent("failed");
    await userEvent.click(toggle);
    expect(screen.getByText("Error")).toBeInTheDocument();
    expect(screen.getByTestId("tool-result")).toHaveTextContent("permission denied");
    expect(screen.queryByTestId("tool-write-content")).toBeNull();
    await userEvent.click(screen.getByRole("button", { name: /Show the content of hello\.rs \(1 line\)/ }));
    const content = screen.getByTestId("tool-write-content");
    await within(content).findByText("fn");
    expect(content.querySelector("code.language-rust")).not.toBeNull();
  });
});

describe("code blocks", () => {
  it("have a language label and a Copy button that copies the code", async () => {
    const user = userEvent.setup();
    const writeText = vi.spyOn(navigator.clipboard, "writeText");
    render(<Markdown text={"```rust\nfn main() {}\n```"} />);
    expect(screen.getByTestId("code-language")).toHaveTextContent("rust");
    await user.click(screen.getByRole("button", { name: "Copy rust code" }));
    expect(writeText).toHaveBeenCalledWith("fn main() {}");
    expect(await screen.findByText("Copied")).toBeInTheDocument();
    expect(screen.getByRole("status")).toHaveTextContent("Copied to the clipboard");
  });
});
