/**
 * nbcluster's JupyterLab and Notebook 7 extension: the "Clusters" sidebar.
 *
 * Needs nothing lab-only (no ILabShell), so it loads in Notebook 7 too.
 */

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { Actions } from './actions';
import { ClusterSidebar } from './sidebar';

const PLUGIN_ID = 'nbcluster-labextension:plugin';

const clusterIcon = new LabIcon({
  name: 'nbcluster:clusters',
  svgstr: `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="12" cy="5" r="3"/><circle cx="5" cy="18" r="3"/><circle cx="19" cy="18" r="3"/>
    <path d="M11 8h2v3.2l5.2 4.1-1.2 1.6L12 13l-5 3.9-1.2-1.6L11 11.2z"/>
  </g></svg>`
});

namespace CommandIDs {
  export const open = 'nbcluster:open';
  export const create = 'nbcluster:new';
  export const refresh = 'nbcluster:refresh';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'A sidebar listing every nbcluster cluster on this machine, live.',
  autoStart: true,
  optional: [ILayoutRestorer, INotebookTracker, ISettingRegistry, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    tracker: INotebookTracker | null,
    settings: ISettingRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const sidebar = new ClusterSidebar({
      actions: s => new Actions(tracker, () => void s.poll.refresh()),
      interval: 2,
      idleAfter: 3600
    });
    sidebar.title.icon = clusterIcon;
    app.shell.add(sidebar, 'left', { rank: 200 });
    if (restorer) {
      restorer.add(sidebar, 'nbcluster-sidebar');
    }
    if (settings) {
      void settings.load(PLUGIN_ID).then(
        loaded => {
          const apply = () =>
            sidebar.setSettings(
              loaded.get('refreshSeconds').composite as number,
              (loaded.get('idleMinutes').composite as number) * 60
            );
          apply();
          loaded.changed.connect(apply);
        },
        () => undefined
      );
    }
    app.commands.addCommand(CommandIDs.open, {
      label: 'Show the Clusters panel',
      caption: 'nbcluster: every cluster on this machine',
      execute: () => app.shell.activateById(sidebar.id)
    });
    app.commands.addCommand(CommandIDs.create, {
      label: 'New nbcluster cluster…',
      execute: () => sidebar.create()
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh the Clusters panel',
      execute: () => sidebar.poll.refresh()
    });
    // The cluster widget in a notebook links here (kernel_ext/cluster_view.py): a link with
    // class nbcluster-open-panel, wherever it is rendered, opens this panel.
    document.body.addEventListener('click', event => {
      const link = (event.target as Element | null)?.closest?.('.nbcluster-open-panel');
      if (link) {
        event.preventDefault();
        app.shell.activateById(sidebar.id);
      }
    });
    if (palette) {
      for (const command of [CommandIDs.open, CommandIDs.create, CommandIDs.refresh]) {
        palette.addItem({ command, category: 'nbcluster' });
      }
    }
  }
};

export default plugin;
